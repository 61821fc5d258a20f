"""Two CPU processes (torchrun, gloo): a GRPO group straddles both ranks; alpha must equal one process's."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from trl_aem import aem_coefficients

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "ddp_single_turn.py")


def free_port() -> int:
    # torchrun's `--master_port 0` does not make both ranks agree on a port; pick a free one here
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_torchrun(out_dir, *args, script=SCRIPT):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        script,
        str(out_dir),
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("scope", ["group", "batch"])
def test_group_straddling_two_ranks_gets_the_single_process_alpha(tmp_path, scope):
    rank0, rank1 = run_torchrun(tmp_path, scope)
    assert rank0["num_processes"] == rank1["num_processes"] == 2
    for r0, r1 in zip(rank0["records"], rank1["records"], strict=True):
        # the one group of 8 completions lives half on each rank
        assert r0["group"].unique().tolist() == r1["group"].unique().tolist() == [0]
        assert r0["trajectory"].tolist() == [0, 1, 2, 3] and r1["trajectory"].tolist() == [4, 5, 6, 7]
        # what one process would compute over the whole group
        stat = torch.cat([r0["entropy"], r1["entropy"]])
        groups = torch.cat([r0["group"], r1["group"]]) if scope == "group" else torch.zeros(8, dtype=torch.long)
        expected = aem_coefficients(stat, groups)
        applied = torch.cat([r0["alpha"], r1["alpha"]])
        assert torch.allclose(applied, expected, atol=1e-6)
        assert applied.std() > 0
        assert torch.allclose(applied.mean(), torch.tensor(1.0), atol=1e-5)
        # each rank multiplied its own rows' base advantage by its own alpha
        for record, offset in ((r0, 0), (r1, 4)):
            base = record["base"][offset : offset + 4]
            mask = record["completion_mask"].bool()
            expected_adv = (base * record["alpha"])[:, None].expand_as(mask)
            assert torch.allclose(record["advantages"][mask], expected_adv[mask], atol=1e-5)
    # both ranks log the same (globally computed) AEM metrics
    keys = [k for k in rank0["log_history"][0] if k.startswith("aem/")]
    assert keys
    for k in keys:
        assert rank0["log_history"][0][k] == pytest.approx(rank1["log_history"][0][k])


MULTITURN_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "ddp_multiturn.py")


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_multiturn_group_straddling_two_ranks(tmp_path, mode):
    rank0, rank1 = run_torchrun(tmp_path, mode, script=MULTITURN_SCRIPT)
    assert rank0["num_processes"] == 2
    for r0, r1 in zip(rank0["records"], rank1["records"], strict=True):
        stat = torch.cat([r0["entropy"], r1["entropy"]])
        groups = torch.cat([r0["group"], r1["group"]])
        assert groups.unique().tolist() == [0]  # every span of the 8 episodes is in the one group
        expected = aem_coefficients(stat, groups)
        assert torch.allclose(torch.cat([r0["alpha"], r1["alpha"]]), expected, atol=1e-6)
    # env and AEM metrics are global: both ranks log the same values
    keys = [k for k in rank0["log_history"][0] if k.startswith(("env/", "aem/"))]
    assert "env/success_rate" in keys and "aem/alpha_std" in keys
    for k in keys:
        if k != "env/rollout_seconds":
            assert rank0["log_history"][0][k] == pytest.approx(rank1["log_history"][0][k]), k
