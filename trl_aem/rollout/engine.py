"""The batched multi-turn episode engine.

All episodes of a generation batch run together. Each turn: build the prompts of the episodes still
running, make **one** batched ``generate`` call for them (finished episodes drop out), then run every
``env.step`` in parallel in the :class:`~trl_aem.envs.EnvPool`. Episodes end on ``done``, ``max_turns``,
the context limit (trajectory mode), or an environment fault (error / timeout), which ends that
episode only. An environment that breaks its contract (wrong return types) raises
:class:`~trl_aem.envs.EnvContractError` out of :meth:`RolloutEngine.run`: every episode would hit that bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..envs.base import EnvContractError, StepResult
from ..envs.pool import EnvCall, EnvPool
from .episode import Episode, Turn
from .prompts import ChatFormatter
from .settings import RolloutSettings

__all__ = ["Generated", "RolloutEngine", "RolloutSettings"]


@dataclass
class Generated:
    """One sampled response, as the trainer's generation back end returns it."""

    completion_ids: list[int]
    entropies: torch.Tensor
    logps: torch.Tensor
    sampling_logps: list[float] | None = None


# prompts, max_new_tokens -> one Generated per prompt (the trainer wires transformers/vLLM behind it)
GenerateFn = Callable[[list[list[int]], int], list[Generated]]


class RolloutEngine:
    def __init__(
        self,
        pool: EnvPool,
        formatter: ChatFormatter,
        generate: GenerateFn,
        settings: RolloutSettings,
        *,
        eos_token_ids: list[int],
        sync_active: Callable[[int], int] | None = None,
    ):
        self.pool, self.formatter, self.generate, self.settings = pool, formatter, generate, settings
        self.eos_token_ids = set(eos_token_ids)
        # Every rank must make the same number of generate calls per turn (vLLM server mode, ZeRO-3):
        # `sync_active` returns the largest number of running episodes over all ranks.
        self.sync_active = sync_active or (lambda n: n)
        self.system_prompt: str | None = None

    def _generate_and_step(self, episodes: list[Episode], active: list[int], context: list[list[int]]) -> list[int]:
        """One batched generate call for ``active`` episodes (a dummy prompt when this rank has none, so
        every rank makes the same calls), then start their environment steps; returns the slots started."""
        settings, fmt = self.settings, self.formatter
        prompts, budgets = [], []
        for k in active:
            episode = episodes[k]
            if settings.rollout_mode == "trajectory":
                prompts.append(episode.initial_prompt_ids + context[k])
                budgets.append(settings.max_completion_length - len(context[k]))
            else:
                prompts.append(fmt.step_prompt(episode))
                budgets.append(settings.turn_tokens)
        max_new = max([min(settings.turn_tokens, b) for b in budgets] or [1])
        # a rank with no running episode still makes the call (vLLM server mode, ZeRO-3), on a one-token prompt
        generated = self.generate(prompts or [[min(self.eos_token_ids)]], max(1, max_new))
        if not active:
            return []
        texts = fmt.tokenizer.batch_decode([g.completion_ids for g in generated], skip_special_tokens=True)
        calls = []
        for k, prompt, gen, text, budget in zip(active, prompts, generated, texts, budgets, strict=True):
            ids = gen.completion_ids[: max(0, budget)]
            sampled = None if gen.sampling_logps is None else list(gen.sampling_logps[: len(ids)])
            episodes[k].turns.append(
                Turn(
                    prompt_ids=prompt,
                    completion_ids=list(ids),
                    entropies=gen.entropies[: len(ids)],
                    logps=gen.logps[: len(ids)],
                    response=text,
                    sampling_logps=sampled,
                )
            )
            calls.append(EnvCall(k, "step", text))
        self.pool.start(calls)
        return active

    def _apply(self, episode: Episode, outcome, context: list[list[int]], k: int) -> None:
        """Record one environment step's outcome on its episode and decide whether the episode ends."""
        settings, current = self.settings, episode.turns[-1]
        if outcome.status == "contract":
            raise EnvContractError(outcome.error)
        if not outcome.ok:
            episode.ending, episode.error = outcome.status, f"step {len(episode.turns)}: {outcome.error}"
            return
        result: StepResult = outcome.value
        current.observation, current.reward = result.observation, result.reward
        current.invalid, current.info = bool(result.info.get("invalid", False)), result.info
        episode.success = episode.success or bool(result.info.get("success", False))
        if result.done:
            episode.ending = "done"
        elif len(episode.turns) >= settings.max_turns:
            episode.ending = "max_turns"
        elif settings.rollout_mode == "trajectory":
            ended = bool(current.completion_ids) and current.completion_ids[-1] in self.eos_token_ids
            current.observation_ids = self.formatter.observation_ids(result.observation, response_ended=ended)
            context[k] = context[k] + current.completion_ids + current.observation_ids
            # the conversation no longer leaves room for another response: cut (and masked, DAPO-style)
            if len(context[k]) >= settings.max_completion_length:
                current.observation_ids = []
                episode.ending = "truncated"

    def run(self, tasks: list[dict], groups: list[int], indices: list[int]) -> list[Episode]:
        """Play one episode per task (slot ``k`` of the pool for task ``k``) and return them finished."""
        settings, fmt = self.settings, self.formatter
        episodes = [Episode(task=t, group=g, index=i) for t, g, i in zip(tasks, groups, indices, strict=True)]
        outcomes = self.pool.run([EnvCall(k, "reset", task) for k, task in enumerate(tasks)])
        for episode, outcome in zip(episodes, outcomes, strict=True):
            episode.system_prompt = self.system_prompt
            if outcome.status == "contract":
                raise EnvContractError(outcome.error)
            if outcome.ok:
                episode.first_observation = outcome.value
                episode.initial_prompt_ids = fmt.initial_prompt(episode)
            else:
                episode.ending, episode.error = outcome.status, f"reset: {outcome.error}"
        # trajectory mode: the running token sequence after the initial prompt
        context: list[list[int]] = [[] for _ in episodes]
        # nested under the trainer's bar and not kept (leave=False): on a terminal it redraws in place, but written
        # to a file or a pipe every redraw is a new line (hundreds per run), so it is off when stderr is no terminal
        # (tqdm's disable=None)
        progress = tqdm(
            total=len(episodes),
            desc="episodes",
            unit="ep",
            disable=None if settings.show_progress else True,
            leave=False,
        )
        progress.update(sum(e.finished for e in episodes))
        # Episodes are split into `waves`; while one wave's environment steps run in the pool, the next
        # wave generates, so environment latency hides behind generation instead of adding to it.
        num_waves = max(1, min(settings.rollout_waves, len(episodes)))
        in_flight: list[list[int]] = [[] for _ in range(num_waves)]
        while True:
            any_generated = False
            for wave in range(num_waves):
                if in_flight[wave]:
                    outcomes = self.pool.wait(in_flight[wave])
                    for k, outcome in zip(in_flight[wave], outcomes, strict=True):
                        self._apply(episodes[k], outcome, context, k)
                        if episodes[k].finished:
                            progress.update(1)
                    in_flight[wave] = []
                active = [k for k in range(wave, len(episodes), num_waves) if not episodes[k].finished]
                if self.sync_active(len(active)) == 0:
                    continue
                any_generated = True
                in_flight[wave] = self._generate_and_step(episodes, active, context)
            progress.set_postfix(running=sum(not e.finished for e in episodes))
            if not any_generated:
                break
        progress.close()
        for episode in episodes:
            rewards = sum(t.reward for t in episode.turns)
            episode.env_return = rewards - self.settings.invalid_action_penalty * episode.num_invalid
        return episodes
