"""``RolloutEngine`` on its own: a scripted generate function stands in for the model, so every turn's batch,
prompt, budget and ending can be checked exactly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trl_aem.envs import EnvPool
from trl_aem.envs.keyword import KeywordEnv
from trl_aem.rollout import ChatFormatter, Generated, RolloutEngine, RolloutSettings


class ScriptedPolicy:
    """Answers every prompt with the word the prompt asks for (or a fixed text), recording each call."""

    def __init__(self, tokenizer, answer: str | None = None, entropy: float = 0.5):
        self.tokenizer, self.answer, self.entropy = tokenizer, answer, entropy
        self.calls: list[tuple[int, int]] = []  # (prompts in the call, max_new_tokens)
        self.prompts: list[list[int]] = []

    def __call__(self, prompts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        self.calls.append((len(prompts), max_new_tokens))
        self.prompts += prompts
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(prompt)
            word = self.answer if self.answer is not None else text.rsplit("Say the word ", 1)[-1].split(".")[0]
            ids = self.tokenizer(f"<action>{word}</action>", add_special_tokens=False)["input_ids"]
            ids = (ids + [self.tokenizer.eos_token_id])[:max_new_tokens]
            n = len(ids)
            out.append(Generated(ids, torch.full((n,), self.entropy), torch.full((n,), -0.1)))
        return out


def run(tokenizer, tasks, policy, **settings) -> tuple[list, RolloutEngine]:
    settings = RolloutSettings(**{"rollout_mode": "step", "max_turn_tokens": 32, **settings})
    pool = EnvPool(KeywordEnv, max_workers=4, timeout=5.0)
    try:
        engine = RolloutEngine(
            pool,
            ChatFormatter(tokenizer, settings.history_length),
            policy,
            settings,
            eos_token_ids=[tokenizer.eos_token_id],
        )
        engine.system_prompt = KeywordEnv.system_prompt
        episodes = engine.run(tasks, [i // 2 for i in range(len(tasks))], list(range(len(tasks))))
    finally:
        pool.close()
    return episodes, engine


TASKS = [{"words": ["apple"]}, {"words": ["mug", "lamp"]}, {"words": ["desk", "key", "book"]}, {"words": ["cup"]}]


@pytest.mark.parametrize("waves", [1, 2])
def test_one_batched_call_per_turn_and_wave_for_the_running_episodes(tokenizer, waves):
    policy = ScriptedPolicy(tokenizer)
    episodes, _ = run(tokenizer, TASKS, policy, rollout_waves=waves)
    assert [len(e.turns) for e in episodes] == [1, 2, 3, 1]
    assert all(e.success and e.ending == "done" for e in episodes)
    assert [e.env_return for e in episodes] == [1.0, 2.0, 3.0, 1.0]
    running_per_turn = [4, 2, 1]  # episodes finish and drop out of later calls
    if waves == 1:
        assert [n for n, _ in policy.calls] == running_per_turn
    else:  # wave 0 holds episodes 0 and 2, wave 1 holds 1 and 3
        assert [n for n, _ in policy.calls] == [2, 2, 1, 1, 1]
    assert {budget for _, budget in policy.calls} == {32}
    turn = episodes[2].turns[1]
    assert turn.entropies.tolist() == [0.5] * len(turn.completion_ids) and turn.response == "<action>key</action>"


def test_step_prompts_hold_the_window_of_history(tokenizer):
    policy = ScriptedPolicy(tokenizer)
    episodes, _ = run(tokenizer, [TASKS[2]], policy, history_length=1)
    third = tokenizer.decode(episodes[0].turns[2].prompt_ids)
    assert "Your last 1 step(s):" in third and "[step 2] action: <action>key</action>" in third
    assert "[step 1]" not in third and "Current observation (step 3)" in third


def test_invalid_actions_are_penalised_and_max_turns_ends_an_episode(tokenizer):
    policy = ScriptedPolicy(tokenizer, answer="")  # "<action></action>": no action
    episodes, _ = run(tokenizer, [TASKS[2]], policy, max_turns=2, invalid_action_penalty=0.25)
    episode = episodes[0]
    assert episode.ending == "max_turns" and len(episode.turns) == 2 and not episode.success
    assert episode.num_invalid == 2 and episode.env_return == pytest.approx(-0.5)


def test_trajectory_mode_extends_one_sequence_and_truncates_at_the_budget(tokenizer):
    policy = ScriptedPolicy(tokenizer)
    episodes, engine = run(tokenizer, [TASKS[2]], policy, rollout_mode="trajectory", max_completion_length=10_000)
    turns = episodes[0].turns
    # each prompt is the first prompt plus everything generated and observed before it
    context = list(episodes[0].initial_prompt_ids)
    for turn in turns:
        assert turn.prompt_ids == context
        context += turn.completion_ids + turn.observation_ids
    assert all(t.observation_ids for t in turns[:-1]) and not turns[-1].observation_ids  # the last one ended it

    first_response = len(turns[0].completion_ids) + len(turns[0].observation_ids)
    short, _ = run(tokenizer, [TASKS[2]], ScriptedPolicy(tokenizer), rollout_mode="trajectory",
                   max_completion_length=first_response + 3)  # fmt: skip
    assert short[0].ending == "truncated" and len(short[0].turns) == 2
    assert len(short[0].turns[1].completion_ids) <= 3  # the second response got what was left of the budget


def test_a_faulty_environment_ends_only_its_episode(tokenizer):
    tasks = [*TASKS[:2], {"words": ["apple", "mug"], "fault": "raise", "fault_turn": 1}]
    episodes, _ = run(tokenizer, tasks, ScriptedPolicy(tokenizer))
    assert [e.ending for e in episodes] == ["done", "done", "error"]
    assert "the environment broke" in episodes[2].error and episodes[2].faulted and len(episodes[2].turns) == 2
    bad_reset, _ = run(tokenizer, [{"words": []}], ScriptedPolicy(tokenizer))
    assert bad_reset[0].ending == "error" and bad_reset[0].error.startswith("reset:") and not bad_reset[0].turns


def test_every_rank_makes_the_same_calls(tokenizer):
    """With several processes, a rank whose episodes have all ended keeps calling generate (one-token prompt) while
    another rank still has running episodes: vLLM server mode and ZeRO-3 need the same calls on every rank."""
    policy = ScriptedPolicy(tokenizer)
    settings = dataclasses.replace(RolloutSettings(rollout_mode="step", rollout_waves=1), max_turn_tokens=32)
    pool = EnvPool(KeywordEnv, max_workers=2, timeout=5.0)
    try:
        engine = RolloutEngine(
            pool,
            ChatFormatter(tokenizer),
            policy,
            settings,
            eos_token_ids=[tokenizer.eos_token_id],
            sync_active=lambda local: max(local, 1 if len(policy.calls) < 3 else 0),  # another rank runs 3 turns
        )
        episodes = engine.run([TASKS[0]], [0], [0])
    finally:
        pool.close()
    assert len(episodes[0].turns) == 1 and len(policy.calls) == 3
    assert policy.prompts[1:] == [[tokenizer.eos_token_id]] * 2
