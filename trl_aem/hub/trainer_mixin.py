"""``HubMixin``: checkpoints and model cards on the Hub for :class:`~trl_aem.AEMTrainer`.

The trainer's Hub concerns, apart from training: the standard trl_aem model card written at every save, uploads
retried by :class:`~trl_aem.hub.push.ResilientHubApi` (an outage never stops training nor loses a checkpoint),
``save_total_limit`` rotation that keeps checkpoints still waiting for their upload, the merged PEFT model, and the
upload counters in the logs. The methods it overrides are in the table of :mod:`trl_aem.trl_compat`.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import warnings

from ..trl_compat import temporarily
from .card import CardInputs, WallClock, write_model_card
from .push import ResilientHubApi, trainer_hub_api
from .results import carry_over_cli_evaluations

__all__ = ["HubMixin"]

logger = logging.getLogger(__name__)


class HubMixin:
    """Hub methods of :class:`~trl_aem.AEMTrainer`; :meth:`_setup_hub` runs before ``Trainer.__init__`` (which
    creates the repository when ``push_to_hub=True``)."""

    def _setup_hub(self, config) -> WallClock:
        """Create the retrying Hub client and the wall clock the card reports; returns the clock (a callback)."""
        self._hub_api = ResilientHubApi(
            retries=config.hub_push_retries, backoff=config.hub_push_backoff, retry_budget=config.hub_push_retry_budget
        )
        self._wall_clock = WallClock()
        self.model_card_dataset: str | None = None  # a Hub dataset id for the card's `datasets`, when known
        self._latest_checkpoint: str | None = None  # the newest checkpoint folder a push was asked for
        return self._wall_clock

    def _finish_training(self) -> None:
        """What ``AEMTrainer.train`` does after ``Trainer.train``: with ``save_final_model=True`` (the default) the
        final model, tokenizer, card, curves and ``aem_env.json`` in ``output_dir`` (what the card promises is there,
        whatever ``save_strategy`` was), then the list of uploads that did not reach the Hub."""
        if self.args.save_final_model:
            # _internal_call: Trainer.save_model would push to the Hub here; uploads follow hub_strategy instead
            self.save_model(self.args.output_dir, _internal_call=True)
            self.create_model_card()
        if self.args.push_to_hub:
            self.report_missing_uploads()

    def report_missing_uploads(self) -> list[str]:
        """Warn (once per call) which folders did not reach the Hub and where they are on disk; returns them."""
        missing = self._hub_api.pending_failures
        if missing and self.is_world_process_zero():
            repo = self.hub_model_id or self.args.hub_model_id
            folders = ", ".join(os.path.abspath(folder) for folder in missing)
            warnings.warn(
                f"Hub: {len(missing)} upload(s) did not reach {repo}: {folders}. They are complete on disk; "
                f"trainer.push_to_hub() tries again, or upload them with `hf upload {repo} <folder>`",
                RuntimeWarning,
                stacklevel=2,
            )
        return missing

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ):
        """Write the standard trl_aem model card (``README.md``), the training-curves PNG and ``aem_env.json`` into
        ``output_dir``. Same signature as TRL's: called by ``_save_checkpoint`` at every save (so the card and
        curves travel with every checkpoint push) and by ``push_to_hub``.

        Replaces ``_BaseTrainer.create_model_card`` (trl/trainer/base_trainer.py), whose ``generate_model_card``
        only reads templates from the trl package.
        """
        if not self.is_world_process_zero():
            return
        try:
            card = write_model_card(
                CardInputs.from_trainer(self),
                self.args.output_dir,
                model_name=model_name,
                dataset_name=dataset_name or self.model_card_dataset,
                tags=tags,
            )
            hub_card = self._hub_card() if self.args.push_to_hub else None
            if hub_card is not None:  # keep what `trl-aem eval --push-results` wrote since the last push
                carry_over_cli_evaluations(card, hub_card).save(os.path.join(self.args.output_dir, "README.md"))
        except Exception as error:  # a card problem must never cost the checkpoint it describes
            warnings.warn(f"trl_aem: could not write the model card ({type(error).__name__}: {error})", stacklevel=2)

    def _hub_card(self):
        """The card now on the Hub (one download per save), or ``None`` when there is none or the Hub does not
        answer: the card is then rendered from this run alone, as before any evaluation was pushed."""
        from huggingface_hub import ModelCard

        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        if not repo_id or not self._hub_api.reachable:  # a Hub that is down would cost a timeout per save
            return None
        try:
            return ModelCard.load(repo_id, token=self.args.hub_token)
        except Exception as error:  # absent card, unreachable Hub: nothing to carry over
            logger.info("model card: no card read from %s (%s)", repo_id, type(error).__name__)
            return None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        # Trainer.init_hf_repo's `hf_api().create_repo(...)` raises when the Hub is unreachable; training starts anyway
        # and the first upload that gets through creates the repository (ResilientHubApi).
        try:
            with trainer_hub_api(self._hub_api):
                super().init_hf_repo(token=token, private=private)
        except Exception as error:
            warnings.warn(
                f"trl_aem: could not create the Hub repository yet ({type(error).__name__}: {error}); training "
                "continues and the first successful push creates it",
                RuntimeWarning,
                stacklevel=2,
            )
            self.hub_model_id = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
            self.push_in_progress = None

    def _save_checkpoint(self, model, trial) -> None:
        """``GRPOTrainer._save_checkpoint`` (then ``Trainer._save_checkpoint``) whose ``save_total_limit`` rotation
        keeps checkpoints still waiting to reach the Hub. Trainer rotates right after the push starts (``rotate_checkpoints(...)`` at the end of
        ``Trainer._save_checkpoint``); a folder whose upload failed is queued for a replay with the next push, and
        deleting it would lose it from both places; so would deleting one whose upload is still queued or running.
        Rotation here runs without those folders, which are rotated once their upload went through."""
        limit = self.args.save_total_limit
        if not (self.args.push_to_hub and limit and limit > 0):
            return super()._save_checkpoint(model, trial)
        with temporarily("checkpoint_rotation", self.args, "save_total_limit", None):  # ours below
            super()._save_checkpoint(model, trial)
        if self.args.should_save:
            self._rotate_checkpoints_keeping_pending(limit)

    def _rotate_checkpoints_keeping_pending(self, limit: int) -> None:
        from transformers.trainer_utils import sort_checkpoints

        run_dir = self._get_output_dir(trial=None)
        checkpoints = sort_checkpoints(run_dir, use_mtime=True)
        # not only failed uploads: one still queued or running on the upload thread (a slow Hub, a busy machine) would
        # otherwise lose its folder under it, and with it the checkpoint on both sides
        pending = set(self._hub_api.pending_uploads)
        protected = {checkpoints[-1]} if checkpoints else set()
        if self.state.best_model_checkpoint is not None:
            protected.add(str(self.state.best_model_checkpoint))
        protected |= {c for c in checkpoints if os.path.abspath(c) in pending}
        remaining = len(checkpoints)
        for checkpoint in checkpoints:
            if remaining <= max(limit, len(protected)):
                break
            if checkpoint not in protected:
                shutil.rmtree(checkpoint, ignore_errors=True)
                remaining -= 1

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Trainer._push_from_checkpoint unchanged (hub_strategy, files copied from the checkpoint, asynchronous
        # `upload_folder(..., run_as_future=True)`), its uploads retried and reported instead of lost or raised.
        self._latest_checkpoint = checkpoint_folder  # even when Trainer skips it (previous push still running)
        with trainer_hub_api(self._hub_api):
            super()._push_from_checkpoint(checkpoint_folder)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """``Trainer.push_to_hub`` (save, card, upload of ``output_dir``) whose upload is retried with backoff and, if
        the Hub stays unreachable, reported with a warning (``None`` is returned) instead of raised: the local
        ``output_dir`` is complete either way. With ``push_merged_model=True`` and a PEFT model, the merged model
        is pushed to ``<hub_model_id>-merged`` as well."""
        with trainer_hub_api(self._hub_api):
            result = super().push_to_hub(
                commit_message=commit_message,
                blocking=blocking,
                token=token,
                revision=revision,
                private=private,
                **kwargs,
            )
        if self.is_world_process_zero():
            self._push_latest_checkpoint(token=token, blocking=blocking)
            if self.args.push_merged_model:
                self._push_merged_model(token=token, blocking=blocking)
            if blocking:
                self.report_missing_uploads()
        return result

    def _push_latest_checkpoint(self, token: str | None = None, blocking: bool = True):
        """With ``hub_strategy`` ``checkpoint`` / ``all_checkpoints``, upload the newest checkpoint if no upload of
        it went through (its push failed, or Trainer skipped it while an earlier push was still running), so the
        Hub's ``last-checkpoint`` is the one training ended with and resuming from it loses nothing."""
        folder = self._latest_checkpoint
        strategy = getattr(self.args.hub_strategy, "value", self.args.hub_strategy)
        if folder is None or strategy not in ("checkpoint", "all_checkpoints") or not os.path.isdir(folder):
            return None
        path_in_repo = "last-checkpoint" if strategy == "checkpoint" else os.path.basename(folder)
        if self._hub_api.was_uploaded(folder, path_in_repo):
            return None
        return self._hub_api.upload_folder(
            repo_id=self.hub_model_id,
            folder_path=folder,
            path_in_repo=path_in_repo,
            commit_message=f"{os.path.basename(folder)}, checkpoint (catch-up after a failed or skipped push)",
            token=token or self.args.hub_token,
            revision=self.args.hub_revision,
            run_as_future=not blocking,
        )

    def _push_merged_model(self, token: str | None = None, blocking: bool = True):
        """Merge the adapter into a copy of the base model, save it in ``output_dir/_merged`` (``_*`` is skipped by
        Trainer's uploads of ``output_dir``) with a full-model card and push it to ``<hub_model_id>-merged``."""
        from peft import PeftModel

        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, PeftModel):
            warnings.warn("push_merged_model=True has no effect: the model is not a PEFT model", stacklevel=2)
            return None
        if getattr(model.get_base_model().config, "quantization_config", None) is not None:
            warnings.warn(
                "push_merged_model=True: a quantized (QLoRA) base is not merged; push the adapter", stacklevel=2
            )
            return None
        folder = os.path.join(self.args.output_dir, "_merged")
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(folder)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(folder)
        del merged
        write_model_card(
            CardInputs.from_trainer(self), folder, kind="merged", adapter_repo=self.hub_model_id, tags=["merged"]
        )
        return self._hub_api.upload_folder(
            repo_id=f"{self.hub_model_id}-merged",
            folder_path=folder,
            commit_message="Merged model, end of training",
            token=token or self.args.hub_token,
            private=self.args.hub_private_repo,
            revision=self.args.hub_revision,
            run_as_future=not blocking,
        )

    def _hub_metrics(self, logs: dict[str, float]) -> dict[str, float]:
        """The cumulative Hub upload counters (``hub/pushes``, ``hub/push_retries``, ``hub/push_failures``) for a
        training log entry (``AEMTrainer.log``); none without ``push_to_hub`` or outside training logs."""
        if self.args.push_to_hub and "loss" in logs:
            return self._hub_api.stats.metrics()
        return {}
