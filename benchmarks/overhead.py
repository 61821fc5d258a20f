"""AEM's cost per training step, three arms on the same tiny model, seed and process:

- ``aem``: AEMTrainer (``use_aem=True``);
- ``aem_off``: AEMTrainer with ``use_aem=False`` (still records and logs entropies: the control arm);
- ``grpo``: plain ``trl.GRPOTrainer``.

The learning rate defaults to 0 so that all arms sample exactly the same completions (step time depends
on generated length, which would otherwise drift apart as the policies diverge); the optimizer still
steps. Arms alternate in rounds so machine noise hits them alike; the figure is the median of TRL's
logged ``step_time`` over all measured steps (the first ``--warmup`` steps of every run are dropped).
The paper reports about +1.1% over the base algorithm.

Peak memory: on a GPU, ``torch.cuda.max_memory_allocated`` of each arm's runs (reset before each run);
on CPU, the peak resident set of one fresh process per arm (``ru_maxrss``), since a process's RSS never
shrinks. ``step_time_ratio`` is AEM over the base algorithm (plain ``GRPOTrainer``, no AEM code at all);
``step_time_ratio_vs_aem_off`` is AEM over its own ``use_aem=False`` arm.

The tiny model has a 512-token vocabulary, which makes the per-token entropy AEM records nearly free;
``--preset 50m`` (about 46M parameters, a 49,152-token vocabulary like SmolLM2's) is closer to a real
model's cost. Token ids beyond the tiny tokenizer decode to nothing, which is harmless here.

    python benchmarks/overhead.py                      # writes benchmarks/results/overhead.json and .md
    python benchmarks/overhead.py --preset 50m         # overhead_50m.json (overhead_50m_cuda.json on a GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl_aem.runtime import setup_process  # noqa: E402

setup_process()  # before torch and trl: known third-party noise off, torch threads (TRL_AEM_THREADS overrides)

import torch  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

import trl_aem  # noqa: E402
from trl_aem import AEMConfig, AEMTrainer  # noqa: E402
from trl_aem.digits import digit_dataset, digit_reward  # noqa: E402
from trl_aem.tiny import build_model, build_tokenizer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "overhead.json"


ARMS = ("aem", "aem_off", "grpo")
PRESETS = {  # hidden size, layers, heads, vocabulary (None: the tokenizer's)
    "tiny": (64, 2, 4, None),
    "50m": (512, 8, 8, 49152),
    "qwen0.5b": (896, 24, 14, 151936),  # Qwen2.5-0.5B's width, depth and vocabulary (narrower MLP, random weights)
}


def make_model(args, tokenizer):
    model = build_model(
        tokenizer, hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads, seed=args.seed
    )
    if args.vocab_size and args.vocab_size > len(tokenizer):
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            model.resize_token_embeddings(args.vocab_size, mean_resizing=False)
    return model


def run_arm(arm: str, args, tokenizer, dataset) -> list[float]:
    model = make_model(args, tokenizer)
    with tempfile.TemporaryDirectory() as out:
        params = dict(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            num_generations=args.num_generations,
            max_completion_length=args.completion_length,
            learning_rate=args.learning_rate,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            bf16=torch.cuda.is_available(),
            seed=args.seed,
            disable_tqdm=True,
        )
        if arm == "grpo":
            trainer = GRPOTrainer(
                model,
                reward_funcs=digit_reward,
                args=GRPOConfig(**params),
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        else:
            config = AEMConfig(**params, use_aem=arm == "aem")
            trainer = AEMTrainer(
                model, config=config, train_dataset=dataset, processing_class=tokenizer, reward_funcs=digit_reward
            )
        trainer.train()
    times = [log["step_time"] for log in trainer.state.log_history if "step_time" in log]
    return times[args.warmup :]


def cpu_peak_rss(arm: str, args) -> float:
    """Peak RSS (MiB) of a fresh process that runs one arm for ``--steps`` steps."""
    argv = [sys.executable, __file__, "--probe-memory", arm, *sys.argv[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--probe-memory", choices=ARMS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.hidden_size, args.num_layers, args.num_heads, args.vocab_size = PRESETS[args.preset]

    tokenizer = build_tokenizer()
    dataset = digit_dataset(64, seed=args.seed)
    if args.probe_memory:  # child process of cpu_peak_rss
        run_arm(args.probe_memory, args, tokenizer, dataset)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return

    cuda = torch.cuda.is_available()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    peak_mib: dict[str, float] = dict.fromkeys(ARMS, 0.0)
    started = time.time()
    for r in range(args.rounds):
        for arm in ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times[arm] += run_arm(arm, args, tokenizer, dataset)
            if cuda:
                peak_mib[arm] = max(peak_mib[arm], torch.cuda.max_memory_allocated() / 2**20)
    if not cuda:
        peak_mib = {arm: cpu_peak_rss(arm, args) for arm in ARMS}
    median = {arm: statistics.median(t) for arm, t in times.items()}
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "probe_memory")}
    device = torch.cuda.get_device_name() if cuda else "cpu"
    name = "overhead" + ("" if args.preset == "tiny" else f"_{args.preset}") + ("_cuda" if cuda else "")
    output = args.output or RESULTS.parent / f"{name}.json"
    result = {
        "benchmark": "overhead",
        "command": " ".join(["python benchmarks/overhead.py", *map(shlex.quote, sys.argv[1:])]),
        "step_time_ratio": median["aem"] / median["grpo"],
        "step_time_ratio_vs_aem_off": median["aem"] / median["aem_off"],
        "peak_memory_ratio": peak_mib["aem"] / peak_mib["grpo"],
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "peak_memory_mib": peak_mib,
        "median_step_time_s": median,
        "steps_measured": {arm: len(t) for arm, t in times.items()},
        "settings": settings,
        "model_params": sum(p.numel() for p in make_model(args, tokenizer).parameters()),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "trl_aem": trl_aem.__version__,
            "device": device,
            "threads": torch.get_num_threads(),
        },
        "wall_s": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# AEM overhead ({args.preset}, {result['model_params'] / 1e6:.1f}M parameters, {device})",
        "",
        f"`{result['command']}`, {result['date']}; median of {len(times['aem'])} steps per arm, arms interleaved.",
        "",
        "| arm | median step (s) | peak memory (MiB) |",
        "|---|---|---|",
        *(f"| {arm} | {median[arm]:.4f} | {peak_mib[arm]:.0f} |" for arm in ARMS),
        "",
        f"step_time_ratio (aem / grpo) = {result['step_time_ratio']:.4f}; vs aem_off = "
        f"{result['step_time_ratio_vs_aem_off']:.4f}; peak_memory_ratio = {result['peak_memory_ratio']:.4f} "
        f"({result['peak_memory_kind']}).",
    ]
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
