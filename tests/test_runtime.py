"""trl_aem.runtime (issue 23 items 5 and 6): the known third-party noise is filtered and nothing else, a command's
first lines are its own, progress bars do not flood a redirected stderr, and torch's thread count is chosen so that a
run does not oversubscribe the CPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest
import torch

from trl_aem import runtime
from trl_aem.rollout.episode import Episode, Turn

NOISE_MARKERS = ("bitsandbytes", "gemm_4bit_forward", "kernels-community", "publisher trust", "FutureWarning")


def test_only_the_known_messages_are_dropped(caplog):
    runtime.quiet_third_party()
    runtime.quiet_third_party()  # idempotent: one filter per message
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    kernels = logging.getLogger("kernels._internals.hf_hub")
    assert len(bnb.filters) == 1 and len(kernels.filters) == 1
    with caplog.at_level(logging.INFO):
        bnb.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already `pip "
            "install kernels` and the kernels >= 0.11.1",
            "could not verify publisher trust status",
        )
        bnb.warning("a bitsandbytes message nobody filters")
        kernels.warning(
            "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' because Hugging Face "
            "Hub is in offline mode."
        )
        kernels.warning(
            "Skipping publisher trust check for 'someone/their-kernel' because Hugging Face Hub is offline"
        )
    assert [r.getMessage() for r in caplog.records] == [
        "a bitsandbytes message nobody filters",
        "Skipping publisher trust check for 'someone/their-kernel' because Hugging Face Hub is offline",
    ]

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        runtime.quiet_third_party()  # its warning filters go in front of "always"
        deprecated = "`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing`"
        for module, message in [
            ("transformers.training_args", deprecated + " instead."),
            ("transformers.modeling_utils", "`is_gradient_checkpointing` is deprecated and will be removed in v6."),
            ("transformers.training_args", "`some_other_arg` is deprecated and will be removed in v6."),
            ("user_code", deprecated + " instead."),  # the same text raised by someone else's code is kept
        ]:
            warnings.warn_explicit(message, FutureWarning, "x.py", 1, module=module)
        warnings.warn_explicit("a user's FutureWarning", FutureWarning, "x.py", 1, module="transformers.x")
    assert [str(w.message)[:16] for w in seen] == ["`some_other_arg`", "`gradient_checkp", "a user's FutureW"]


def _episode() -> Episode:
    turn = Turn(
        prompt_ids=list(range(400)),
        completion_ids=list(range(120)),
        entropies=torch.rand(120),
        logps=torch.rand(120),
        response="<action>open the drawer</action> " * 20,
        observation="You open the drawer. " * 30,
        invalid=True,
    )
    return Episode(
        task={"words": ["apple"] * 50, "goal": "x" * 500},
        group=3,
        index=12,
        system_prompt="You are an agent. " * 100,
        first_observation="A room. " * 200,
        initial_prompt_ids=list(range(600)),
        turns=[turn] * 6,
        ending="error",
        error="step 6: RuntimeError: " + "the environment crashed " * 40,
    )


def test_episode_and_turn_reprs_are_short():
    episode = _episode()
    text = repr(episode)
    assert len(text) <= 320 and text.startswith("Episode(#12 group 3, task {"), text
    assert "6 turns" in text and "ending error" in text and "RuntimeError" in text and "401" not in text
    assert len(repr(episode.turns[0])) <= 200 and "120 tokens" in repr(episode.turns[0])
    assert repr(Episode(task={}, group=0, index=0)) == "Episode(#0 group 0, task {}, 0 turns, ending None, return 0)"


def test_trls_none_reward_warning_is_one_short_line(caplog):
    """TRL's warning prints the whole row of an unscorable completion: with an environment, a faulted episode's
    prompt, completion and Episode. It keeps its first words, the row's keys and the episode's short repr."""
    runtime.quiet_third_party()
    episode = _episode()
    row = {
        "prompt": episode.messages()[:2],
        "env_return": None,
        "episode": episode,
        "completion": [{"role": "assistant", "content": "\n".join(t.response for t in episode.turns)}],
    }
    with caplog.at_level(logging.WARNING):
        logging.getLogger("trl.trainer.grpo_trainer").warning(  # through accelerate's adapter: a rank prefix
            f"[RANK 0] All reward functions returned None for the following kwargs:\n{row}\n"
            "Please ensure that at least one reward function returns a valid reward."
        )
    (record,) = caplog.records
    message = record.getMessage()
    assert len(message) < 700 and "\n" not in message, message
    assert message.startswith("[RANK 0] All reward functions returned None for a row with keys prompt, env_return")
    assert "Episode(#12 group 3" in message and "env/errors" in message


def test_default_threads_share_the_cores_and_leave_one(monkeypatch):
    monkeypatch.setattr(runtime, "_TORCH_DEFAULT", 16)
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cores, expected in [(1, 1), (2, 1), (3, 2), (4, 3), (16, 15)]:
        monkeypatch.setattr(runtime, "_available_cores", lambda cores=cores: cores)
        assert runtime.default_threads() == expected, cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes on 16 cores
    assert runtime.default_threads() == 7
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 2.5)  # a container quota of 2.5 cores
    assert runtime.default_threads() == 1


def test_thread_overrides(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TRL_AEM_THREADS", "1")
        assert runtime.configure_threads() == 1 == torch.get_num_threads()
        assert runtime.configure_threads(2) == 2 == torch.get_num_threads()  # an explicit count wins
        monkeypatch.delenv("TRL_AEM_THREADS")
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # torch already follows it: kept as is
        assert runtime.configure_threads() == 2
        monkeypatch.setenv("TRL_AEM_THREADS", "two")
        with pytest.raises(SystemExit, match="TRL_AEM_THREADS"):
            runtime.configure_threads()
    finally:
        torch.set_num_threads(before)


def test_a_commands_first_lines_are_its_own(tmp_path):
    """`trl-aem train` with stdout and stderr to pipes (no terminal): no third-party start-up line anywhere, stdout
    begins with the command's own line, and stderr holds a few progress lines, not one per redraw of the nested
    episodes bar (it had hundreds)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    command = [
        sys.executable,
        "-m",
        "trl_aem.cli",
        "train",
        "--env",
        "keyword",
        "--sft_steps",
        "2",
        "--max_steps",
        "1",
    ]
    done = subprocess.run(
        [*command, "--output_dir", str(tmp_path / "out")],
        capture_output=True,  # bytes: text mode would turn each "\r" redraw into a line
        env=env,
        cwd=tmp_path,
        timeout=1800,  # generous: a loaded machine must not fail it (about 15 s here)
    )
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode == 0, stderr[-3000:]
    # lines as a file shows them: a bar redrawn with "\r" stays one line, a bar that moves the cursor adds lines
    out_lines, err_lines = stdout.split("\n"), stderr.split("\n")
    assert out_lines and out_lines[0].startswith("trl-aem train:"), stdout[:500]
    noise = [line for line in out_lines + err_lines if any(marker in line for marker in NOISE_MARKERS)]
    assert not noise, noise
    assert "episodes:" not in stderr, stderr[-2000:]
    assert len(err_lines) <= 15, stderr[-3000:]
