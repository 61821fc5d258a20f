"""The README's commands and code, walked as a new user would (shortened to fit CI), so they cannot drift.

Every command of a ``bash`` block must be listed here, either run (with arguments that make it short) or skipped
with the reason it cannot run on a CPU machine without network; a command added to the README without a line here
fails ``test_every_readme_command_is_accounted_for``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

# README command -> extra arguments that shorten it for CI
RUN = {
    "trl-aem train --env keyword --output_dir keyword-aem": ["--sft_steps", "5", "--max_steps", "2"],
    "trl-aem train --config examples/configs/quickstart.yaml --use_aem false": ["--max_steps", "2"],
    "torchrun --nproc_per_node 2 -m trl_aem.cli train --config examples/configs/quickstart.yaml": ["--max_steps", "1"],
    "python examples/webshop.py --config examples/configs/webshop_cpu.yaml": ["--sft_steps", "5", "--max_steps", "1"],
    "python examples/alfworld.py --config examples/configs/alfworld_cpu.yaml": [
        "--sft_demonstrations",
        "8",
        "--sft_steps",
        "5",
        "--max_steps",
        "1",
        "--max_turns",
        "2",
    ],  # fmt: skip
    "accelerate launch examples/swe.py": ["--sft_demonstrations", "4", "--sft_steps", "5", "--max_steps", "1"],
}
SKIP = {
    'python -m venv .venv && . .venv/bin/activate && pip install "torch==2.13.0" -e ".[dev,alfworld]" && '
    "python examples/quickstart.py": "the set-up itself: .ci/run runs it on a fresh clone",
    ". .venv/bin/activate && python -m pytest -q": "the test suite itself",
    "accelerate launch examples/webshop.py --config examples/configs/webshop_paper.yaml --seed 0": "paper protocol: "
    "a 1.5B model on GPUs",
    "accelerate launch examples/alfworld.py --config examples/configs/alfworld_paper.yaml --seed 0": "paper protocol: "
    "a 1.5B model on GPUs",
    "accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/swe.py --config "
    "examples/configs/swe.yaml --dataset R2E-Gym/R2E-Gym-Subset": "downloads R2E-Gym, needs Docker and GPUs",
    "trl-aem eval --model user/alfworld-aem --env alfworld --episodes 128 --push-results": "a Hub model (the "
    "eval command itself is tested in tests/hub against a local Hub server)",
    "ruff check . && ruff format --check .": ".ci/run runs it",
    "python -m pytest -q tests/trainer/test_distributed.py": "part of the test suite",
}


def readme_commands() -> list[str]:
    """Every command line of the README's ``bash`` blocks (continuation lines joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def test_every_readme_command_is_accounted_for():
    commands = readme_commands()
    assert commands, "no bash blocks found in the README"
    unknown = [c for c in commands if c not in RUN and c not in SKIP]
    assert not unknown, f"README commands neither run nor skipped here: {unknown}"
    assert not set(RUN) - set(commands), "commands listed here but gone from the README"


@pytest.mark.parametrize("command", list(RUN))
def test_readme_command_runs(command, tmp_path):
    argv = shlex.split(command) + RUN[command]
    if argv[0] == "trl-aem":
        argv = [sys.executable, "-m", "trl_aem.cli", *argv[1:]]
    elif argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    elif argv[:2] == ["accelerate", "launch"]:
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", *argv[2:]]
    if "--output_dir" in argv:
        argv[argv.index("--output_dir") + 1] = str(tmp_path / "out")
    else:
        argv += ["--output_dir", str(tmp_path / "out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / "out"
    # what every run's card promises is in its output folder
    for name in ("README.md", "training_curves.png"):
        assert (out / name).exists(), name
    assert (out / "model.safetensors").exists() or (out / "adapter_model.safetensors").exists()


def python_block(after: str) -> str:
    """The first ``python`` block after the heading or sentence ``after``."""
    start = README.index(after)
    return re.search(r"```python\n(.*?)```", README[start:], re.DOTALL).group(1)


def test_use_it_example_runs_as_written(tmp_path, monkeypatch, model_path):
    """The README's math example, with its model and dataset served locally (nothing can be downloaded here)."""
    import datasets

    code = python_block("## Use it")
    assert "max_steps=" in code and "accuracy_reward" in code
    rows = {"prompt": [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(8)]}
    rows["solution"] = [f"${2 * i}$" for i in range(8)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict(rows))
    code = code.replace('"Qwen/Qwen2.5-0.5B-Instruct"', repr(model_path)).replace('"qwen-aem"', repr(str(tmp_path)))
    code = code.replace("max_steps=200", "max_steps=1, per_device_train_batch_size=8, max_completion_length=8")
    code = code.replace("trainer.train()", "trainer.args.use_cpu = True\ntrainer.train()")
    namespace: dict = {}
    exec(compile(code, "README:Use it", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 1 and (tmp_path / "model.safetensors").exists()


def test_environment_example_runs_as_written(tmp_path, model_path, monkeypatch):
    """The README's `Guess` environment, trained as written (a local tiny model stands in for Qwen)."""
    code = python_block("## Train an agent in an environment")
    code = code.replace('"Qwen/Qwen2.5-0.5B-Instruct"', repr(model_path)).replace('"guess-aem"', repr(str(tmp_path)))
    code = code.replace("max_turn_tokens=64", "max_turn_tokens=8, max_steps=1, use_cpu=True")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README:Guess", "exec"), {})
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "aem_env.json").exists()
