"""``AEMConfig``: TRL's ``GRPOConfig`` plus the AEM and multi-turn rollout settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import GRPOConfig

__all__ = ["AEMConfig", "AEM_SCOPES", "AEM_STATISTICS", "ROLLOUT_MODES", "ENV_WORKER_TYPES"]

AEM_SCOPES = ("group", "trajectory", "batch")
AEM_STATISTICS = ("entropy", "surprisal")
ROLLOUT_MODES = ("trajectory", "step")
ENV_WORKER_TYPES = ("thread", "process")


def _bf16_accelerator_available() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch, "xpu", None) and torch.xpu.is_available())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class AEMConfig(GRPOConfig):
    r"""
    Configuration for [`AEMTrainer`]: every [`~trl.GRPOConfig`] field, plus the following.

    AEM (arXiv:2605.00425) rescales each response's advantage by ``alpha = w / mean_group(w)``,
    ``w = exp(-aem_lambda * Htil)``, where ``Htil`` is the response's min-max normalised mean token
    entropy inside its group. The base algorithm (GRPO, DAPO, GSPO, Dr. GRPO, ...) is whatever the
    ``GRPOConfig`` fields select (``loss_type``, ``importance_sampling_level``, ``scale_rewards``,
    ``epsilon_high``, ``beta``); AEM composes with all of them.

    > AEM parameters

    use_aem (`bool`, defaults to `True`):
        Apply the AEM coefficient. `False` gives exactly the base algorithm (the control arm); the
        response statistics are still measured and logged (`aem/response_entropy`, `aem/drift`).
    aem_lambda (`float`, defaults to `1.0`):
        Modulation strength lambda; alpha lies in `[e^-|lambda|, e^|lambda|]`. A negative value is the
        paper's "reversed" ablation (up-weights uncertain responses). `0` disables modulation.
    aem_min_range (`float`, defaults to `0.1`):
        Noise guard in nats: a group whose statistic spans less than this keeps alpha = 1.
    aem_scope (`str`, defaults to `"group"`):
        Normalisation scope: `"group"` (all responses of the `num_generations` rollouts of one task, the
        paper's default), `"trajectory"` (the turns of one episode) or `"batch"` (the whole generation
        batch, across processes).
    aem_statistic (`str`, defaults to `"entropy"`):
        `"entropy"`: mean full-vocabulary token entropy of the response (the paper's estimator).
        `"surprisal"`: mean sampled-token surprisal `-log pi(a_j)` (higher variance; an ablation).
    aem_shuffle (`bool`, defaults to `False`):
        Ablation: randomly permute alpha inside each normalisation group, breaking its link with entropy.

    Unlike `GRPOConfig`, `bf16` defaults to `True` only when a bf16-capable GPU/XPU is present; on a CPU-only
    machine the default is fp32 (bf16 is slower there and transformers refuses it without `use_cpu`).

    > Multi-turn environment parameters (used when the trainer gets an `env`)

    rollout_mode (`str`, defaults to `"trajectory"`):
        `"trajectory"`: one training row per episode, environment tokens masked out of the loss.
        `"step"`: one training row per turn, its prompt holding the task and the last `history_length`
        turns (constant prompt size over long episodes; the AEM paper's ALFWorld/WebShop setting).
    max_turns (`int`, defaults to `10`):
        Maximum number of model responses per episode.
    history_length (`int`, defaults to `2`):
        Step mode: number of previous (response, observation) turns shown in the prompt.
    max_turn_tokens (`int` or `None`, defaults to `None`):
        Cap on the tokens of one response. `None` uses `max_completion_length`.
    env_step_timeout (`float` or `None`, defaults to `60.0`):
        Seconds one `env.step` may take before its episode is ended as timed out. `None` waits forever.
    num_env_workers (`int`, defaults to `8`):
        Parallel workers stepping environments.
    env_worker_type (`str`, defaults to `"thread"`):
        `"thread"` or `"process"` (isolates environments that are not thread-safe or may crash).
    invalid_action_penalty (`float`, defaults to `0.1`):
        Subtracted from the episode return for every invalid action (verl-agent uses 0.1).
    rollout_waves (`int`, defaults to `2`):
        Episodes are generated in this many waves per turn, so one wave's environment steps run while the
        next wave generates (environment latency hidden behind generation). `1` makes one generate call per
        turn for all running episodes: best with instant environments on a GPU, where decoding a batch
        half as large costs nearly as much as the full one.

    > Hub parameters (used with `push_to_hub=True`; `hub_strategy` and the other `hub_*` fields are TRL's)

    push_merged_model (`bool`, defaults to `False`):
        PEFT only: `push_to_hub()` also merges the adapter into the base weights and pushes the full model to the
        repository `<hub_model_id>-merged` (loadable without PEFT, e.g. by vLLM). Checkpoints push the adapter.
    hub_push_retries (`int`, defaults to `3`):
        Retries of a failed upload (server error, network down), after `huggingface_hub`'s own retries. A push
        that still fails is reported (warning, `hub/push_failures`) and tried again with the next checkpoint;
        training goes on and local checkpoints are kept.
    hub_push_backoff (`float`, defaults to `10.0`):
        Seconds before the first retry of a failed upload; doubled for each further retry. Retries run in the
        background upload thread, never in a training step.
    """

    use_aem: bool = field(
        default=True, metadata={"help": "Apply the AEM advantage coefficient (False = base algorithm)."}
    )
    aem_lambda: float = field(
        default=1.0, metadata={"help": "AEM modulation strength lambda; negative reverses the direction (ablation)."}
    )
    aem_min_range: float = field(
        default=0.1, metadata={"help": "Noise guard (nats): groups whose statistic spans less keep alpha = 1."}
    )
    aem_scope: str = field(
        default="group",
        metadata={"help": "Normalisation scope of alpha.", "choices": list(AEM_SCOPES)},
    )
    aem_statistic: str = field(
        default="entropy",
        metadata={
            "help": "Per-response statistic: mean token entropy or mean surprisal.",
            "choices": list(AEM_STATISTICS),
        },
    )
    aem_shuffle: bool = field(
        default=False, metadata={"help": "Ablation: shuffle alpha within each normalisation group."}
    )
    rollout_mode: str = field(
        default="trajectory",
        metadata={
            "help": "Multi-turn training rows: one per episode or one per turn.",
            "choices": list(ROLLOUT_MODES),
        },
    )
    max_turns: int = field(default=10, metadata={"help": "Maximum model responses per episode."})
    history_length: int = field(default=2, metadata={"help": "Step mode: previous turns shown in the prompt."})
    max_turn_tokens: int | None = field(
        default=None, metadata={"help": "Cap on the tokens of one response (default: max_completion_length)."}
    )
    env_step_timeout: float | None = field(
        default=60.0, metadata={"help": "Seconds an env.step may take before the episode ends as timed out."}
    )
    num_env_workers: int = field(default=8, metadata={"help": "Parallel environment workers."})
    env_worker_type: str = field(
        default="thread",
        metadata={"help": "Environment worker kind.", "choices": list(ENV_WORKER_TYPES)},
    )
    invalid_action_penalty: float = field(
        default=0.1, metadata={"help": "Subtracted from the episode return per invalid action."}
    )
    rollout_waves: int = field(
        default=2, metadata={"help": "Generate waves per turn; env steps of one wave overlap the next's generation."}
    )
    push_merged_model: bool = field(
        default=False,
        metadata={"help": "PEFT: push_to_hub() also pushes the merged full model to <hub_model_id>-merged."},
    )
    hub_push_retries: int = field(
        default=3, metadata={"help": "Retries of a failed Hub upload (in the background) before it is reported."}
    )
    hub_push_backoff: float = field(
        default=10.0, metadata={"help": "Seconds before the first retry of a failed Hub upload; doubled each retry."}
    )

    def __post_init__(self):
        self._validate_aem()
        if self.bf16 is None and not self.fp16:
            # TRL defaults to bf16, which transformers refuses on a machine without a bf16-capable accelerator
            # (and which is slower than fp32 on CPUs). Default to fp32 there instead of failing.
            self.bf16 = _bf16_accelerator_available()
        super().__post_init__()

    def _validate_aem(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"AEMConfig: {message}")

        if not isinstance(self.use_aem, bool):
            fail(f"use_aem must be a bool, got {self.use_aem!r}")
        if not _is_number(self.aem_lambda) or not math.isfinite(self.aem_lambda):
            fail(f"aem_lambda must be a finite number, got {self.aem_lambda!r}")
        if not _is_number(self.aem_min_range) or not math.isfinite(self.aem_min_range) or self.aem_min_range < 0:
            fail(f"aem_min_range must be a finite number >= 0 (nats), got {self.aem_min_range!r}")
        if self.aem_scope not in AEM_SCOPES:
            fail(f"aem_scope must be one of {AEM_SCOPES}, got {self.aem_scope!r}")
        if self.aem_statistic not in AEM_STATISTICS:
            fail(f"aem_statistic must be one of {AEM_STATISTICS}, got {self.aem_statistic!r}")
        if not isinstance(self.aem_shuffle, bool):
            fail(f"aem_shuffle must be a bool, got {self.aem_shuffle!r}")
        if self.rollout_mode not in ROLLOUT_MODES:
            fail(f"rollout_mode must be one of {ROLLOUT_MODES}, got {self.rollout_mode!r}")
        if isinstance(self.max_turns, bool) or not isinstance(self.max_turns, int) or self.max_turns < 1:
            fail(f"max_turns must be an integer >= 1, got {self.max_turns!r}")
        if (
            isinstance(self.history_length, bool)
            or not isinstance(self.history_length, int)
            or self.history_length < 0
        ):
            fail(f"history_length must be an integer >= 0, got {self.history_length!r}")
        if self.max_turn_tokens is not None and (
            isinstance(self.max_turn_tokens, bool)
            or not isinstance(self.max_turn_tokens, int)
            or self.max_turn_tokens < 1
        ):
            fail(f"max_turn_tokens must be None or an integer >= 1, got {self.max_turn_tokens!r}")
        if self.env_step_timeout is not None and (
            not _is_number(self.env_step_timeout) or not self.env_step_timeout > 0 or math.isinf(self.env_step_timeout)
        ):
            fail(f"env_step_timeout must be None or a finite number of seconds > 0, got {self.env_step_timeout!r}")
        if (
            isinstance(self.num_env_workers, bool)
            or not isinstance(self.num_env_workers, int)
            or self.num_env_workers < 1
        ):
            fail(f"num_env_workers must be an integer >= 1, got {self.num_env_workers!r}")
        if self.env_worker_type not in ENV_WORKER_TYPES:
            fail(f"env_worker_type must be one of {ENV_WORKER_TYPES}, got {self.env_worker_type!r}")
        if isinstance(self.rollout_waves, bool) or not isinstance(self.rollout_waves, int) or self.rollout_waves < 1:
            fail(f"rollout_waves must be an integer >= 1, got {self.rollout_waves!r}")
        if (
            not _is_number(self.invalid_action_penalty)
            or not math.isfinite(self.invalid_action_penalty)
            or self.invalid_action_penalty < 0
        ):
            fail(f"invalid_action_penalty must be a finite number >= 0, got {self.invalid_action_penalty!r}")
        if not isinstance(self.push_merged_model, bool):
            fail(f"push_merged_model must be a bool, got {self.push_merged_model!r}")
        if (
            isinstance(self.hub_push_retries, bool)
            or not isinstance(self.hub_push_retries, int)
            or self.hub_push_retries < 0
        ):
            fail(f"hub_push_retries must be an integer >= 0, got {self.hub_push_retries!r}")
        if (
            not _is_number(self.hub_push_backoff)
            or not math.isfinite(self.hub_push_backoff)
            or self.hub_push_backoff < 0
        ):
            fail(f"hub_push_backoff must be a finite number of seconds >= 0, got {self.hub_push_backoff!r}")
