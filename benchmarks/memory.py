"""Peak memory of one training step on 50-turn episodes: step mode vs trajectory mode.

Each mode runs in its own subprocess (so peaks do not mix) and reports its peak resident memory
(``ru_maxrss``) after one generation batch of 8 episodes x 50 turns plus one optimizer step, and the
longest training row. On a GPU it reports ``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/memory.py          # writes benchmarks/results/memory.json
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "memory.json"
TURNS, TURN_TOKENS = 50, 16


def child(mode: str) -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl_aem.runtime import setup_process

    setup_process()  # known third-party noise off, torch threads (TRL_AEM_THREADS overrides)
    import torch

    from trl_aem import AEMConfig, AEMTrainer
    from trl_aem.envs.keyword import WORDS, KeywordEnv
    from trl_aem.tiny import build_model, build_tokenizer

    class LongEnv(KeywordEnv):
        def tasks(self, split):
            return [{"words": [WORDS[(i + k) % len(WORDS)] for k in range(TURNS)]} for i in range(8)]

    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory() as out:
        config = AEMConfig(
            output_dir=out,
            rollout_mode=mode,
            per_device_train_batch_size=8,
            num_generations=4,
            max_turns=TURNS,
            max_turn_tokens=TURN_TOKENS,
            max_completion_length=TURNS * (TURN_TOKENS + 40),
            max_steps=1,
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
            save_strategy="no",
            disable_tqdm=True,
        )
        model = build_model(tokenizer, hidden_size=256, num_layers=4, seed=0)
        trainer = AEMTrainer(model, LongEnv, config, processing_class=tokenizer)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    peak = (
        torch.cuda.max_memory_allocated()
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    turns = [log["env/turns"] for log in trainer.state.log_history if "env/turns" in log]
    episodes = trainer.last_episodes  # the training rows, from the last generation batch's episodes
    if mode == "step":
        rows = (sum(len(e.turns) for e in episodes), max(len(t.completion_ids) for e in episodes for t in e.turns))
    else:
        width = max(sum(len(t.completion_ids) + len(t.observation_ids) for t in e.turns) for e in episodes)
        rows = (len(episodes), width)
    print(
        json.dumps(
            {
                "mode": mode,
                "peak_bytes": peak,
                "rows_x_tokens": rows,
                "mean_turns": turns[0],
                "train_seconds": seconds,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
            }
        )
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    results = []
    for mode in ("step", "trajectory"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(results[-1])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "memory",
                "command": "python benchmarks/memory.py",
                "turns": TURNS,
                "turn_tokens": TURN_TOKENS,
                "results": results,
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
