"""Learning evidence: AEM against its base algorithm over many seeds, paired by seed, with the paper's ablations.

Every seed: a model (``--model``, default the offline tiny one) warm-started once with ``SFTTrainer`` on the
environment's expert demonstrations (``--sft-noise``: a share of the expert's actions replaced by random admissible
ones, so the warm start imitates a noisy expert and RL must find which turns' choices lose the episode), then, from
that same start, one RL run per arm (``--steps`` steps of ``AEMTrainer`` in step mode), each evaluated on the
held-out tasks before RL and every ``--eval-every`` steps. Arms, per base algorithm in
``--losses``: ``base`` (``use_aem=False``) and ``aem``; ``gigpo`` is GiGPO's two-level advantage with the GRPO loss.
On the first ``--ablation-seeds`` seeds, with GRPO: ``reversed`` (lambda = -1), ``shuffled`` (alpha permuted within
groups), ``trajectory`` and ``batch`` (normalisation scope).

The report pairs arms by seed (same warm start, same held-out tasks and evaluation seed): the mean difference,
AEM minus base, with a 95% bootstrap interval over seeds, of the final held-out success and of the mean held-out
success over the RL evaluations (the area under the learning curve: how fast it learns), and the same for GiGPO
against GRPO and each ablation against AEM. Response entropy and the training success rate are logged every step,
to check the paper's pattern (AEM keeps entropy higher than its base while failures dominate, lower once successes
dominate).

    python benchmarks/learning.py                               # vault game, tiny model, 2 CPU cores: about 40 minutes
    python benchmarks/learning.py --seeds 2 --steps 4 --eval-every 2 --sft-steps 20 --ablation-seeds 0  # smoke run
    python benchmarks/learning.py --env keyword --seeds 3       # the first round's keyword game

Runs go to ``--jobs`` worker processes (one torch thread each); each finished run is appended to
``<work-dir>/<env>/<options hash>/runs.jsonl`` (the hash covers every option that changes a run, not
``--seeds``, ``--losses`` or ``--ablation-seeds``) and a rerun with the same options skips it, warm starts
included (``--fresh`` starts over; ``--resume-from RESULTS_JSON`` takes the runs a results file of the same options
recorded, when the work folder is gone). Writes ``benchmarks/results/learning_<env>.json``, ``.md`` and ``.png``
(another name with ``--results-name``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shlex
import signal
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl_aem.runtime import setup_process  # noqa: E402  (stdlib only: no torch, no trl)

RESULTS = Path(__file__).parent / "results"
# environment arguments the benchmark uses unless --env-kwargs is given. The vault without elimination signs: the
# tiny model does not learn "the red door and the green door are locked" (seed 0, after 1200 SFT steps: p(correct
# door) 0.48 in those rooms, 0.44-0.51 after 60 RL steps), so with them (the environment's default, a quarter of
# the rooms) held-out success stayed at 0.09-0.17 under GRPO and no arm learned anything to compare
DEFAULT_ENV_KWARGS = {"vault": {"elimination": 0.0}}
ABLATIONS = {
    "reversed": {"aem_lambda": -1.0},
    "shuffled": {"aem_shuffle": True},
    "trajectory": {"aem_scope": "trajectory"},
    "batch": {"aem_scope": "batch"},
}
BASES = ["grpo", "dapo", "dr_grpo", "bnpo", "gigpo"]
# options that change where and how fast runs happen, never their results
LOGISTICS = ("work_dir", "results_dir", "results_name", "fresh", "jobs", "threads", "warm_dir", "resume_from")
# options that change the RL runs but not the SFT warm starts (so --warm-dir shares warm starts across them)
RL_ONLY = ("learning_rate", "steps", "eval_every", "eval_seed")
# options added after results were published: left out of the options hash while unset (None)
LATER_OPTIONS = ("eval_seed",)


# ---------------------------------------------------------------------------------------------- one run
def _env(args):
    from trl_aem.envs import get_env

    return functools.partial(get_env(args.env), **args.env_kwargs)


def _config(args, output_dir: str, seed: int, **overrides):
    import torch

    from trl_aem.recipes import step_mode_config

    return step_mode_config(
        args.env,
        output_dir,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        seed=seed,
        disable_tqdm=True,
        **args.config_overrides,
        **overrides,
    )


def warm_root(args) -> str:
    """Where the seeds' warm starts live: ``args.warm_root`` (set by :func:`main` from ``--warm-dir``), else the
    run folder (scripts that build their own ``args``, such as regime_pilot.py and proxy.py, need not set it)."""
    return getattr(args, "warm_root", None) or args.work_dir


def warm_folder(args, seed: int) -> str:
    """The folder of ``seed``'s warm start (made when it holds a ``config.json``)."""
    return os.path.join(warm_root(args), f"warm-{seed}")


def warm_start(args, seed: int) -> str:
    """SFT once per seed (skipped when its folder exists); every arm of the seed loads these weights."""
    from trl_aem.recipes import env_corpus, make_policy, sft_cold_start, sft_learning_rate

    folder = warm_folder(args, seed)
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    env = _env(args)
    corpus = env_corpus(env) if args.env_tokenizer else None
    model, tokenizer = make_policy(args.model, seed=seed, corpus=corpus, **args.tiny_kwargs)
    if args.sft_steps:
        model, tokenizer = sft_cold_start(
            model,
            tokenizer,
            env,
            _config(args, os.path.join(args.work_dir, f"sft-{seed}"), seed),
            num_episodes=len(env().tasks("train")),
            max_steps=args.sft_steps,
            learning_rate=args.sft_learning_rate or (2e-3 if args.model == "tiny" else sft_learning_rate(args.model)),
            noise=args.sft_noise,
        )
    if isinstance(model, str):  # a Hub model without SFT: load it once to store the start
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model, tokenizer = AutoModelForCausalLM.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_arm(args, seed: int, base: str, arm: str) -> dict:
    """One RL run from the seed's warm start: held-out success before RL and every eval step, the training success
    rate and response entropy at every step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_aem import AEMTrainer
    from trl_aem.rollout import tasks_dataset

    torch.set_num_threads(args.threads)
    overrides = dict(ABLATIONS.get(arm, {}))
    if base == "gigpo":  # GiGPO's two-level advantage with TRL's GRPO loss
        overrides["advantage_estimator"] = "gigpo"
    folder = warm_folder(args, seed)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    env = _env(args)
    config = _config(
        args,
        os.path.join(args.work_dir, f"{base}-{arm}-{seed}"),
        seed,
        use_aem=arm != "base",
        loss_type="grpo" if base == "gigpo" else base,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        eval_strategy="steps" if args.eval_seed is None else "no",  # --eval-seed: PairedEval evaluates
        eval_steps=args.eval_every,
        logging_steps=1,
        **overrides,
    )
    started = time.perf_counter()
    if args.eval_seed is None:  # the trainer's own evaluation: its sampling follows the run's RNG after step 0
        held_out = tasks_dataset(env().tasks("eval"), "eval")
        trainer = AEMTrainer(model, env, config, eval_dataset=held_out, processing_class=tokenizer)
        start = trainer.evaluate()["eval_env/success_rate"]  # the same weights and eval seed for every arm of a seed
        trainer.train()
    else:  # paired evaluations: the same tasks and sampling seed at every point of every arm, episodes recorded
        paired_eval = PairedEval(args, env, config, tokenizer)
        trainer = AEMTrainer(model, env, config, processing_class=tokenizer, callbacks=[paired_eval])
        paired_eval.trainer = trainer
        paired_eval.run(0)
        trainer.train()
    history = trainer.state.log_history
    series = {
        key: [(log["step"], log[key]) for log in history if key in log]
        for key in ("env/success_rate", "aem/response_entropy", "aem/drift_base", "aem/drift")
    }
    if args.eval_seed is None:
        held_out_success = [(0, start)] + [
            (log["step"], log["eval_env/success_rate"]) for log in history if "eval_env/success_rate" in log
        ]
        extra = {}
    else:
        held_out_success = [(step, statistics.fmean(map(int, bits))) for step, bits in paired_eval.episodes]
        extra = {"held_out_episodes": paired_eval.episodes}
    return {
        "seed": seed,
        "base": base,
        "arm": arm,
        "held_out_success": held_out_success,
        **extra,
        "train_success": series["env/success_rate"],
        "response_entropy": series["aem/response_entropy"],
        "drift": series["aem/drift"] if arm != "base" else series["aem/drift_base"] or series["aem/drift"],
        # AEM runs: the drift the base advantages would have had on the same batches (the direction result's control)
        "drift_base": series["aem/drift_base"] if arm != "base" else [],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _paired_eval_class():
    from transformers import TrainerCallback

    class _PairedEval(TrainerCallback):
        """Held-out evaluations with :func:`trl_aem.evaluation.evaluate` at a fixed sampling seed (``--eval-seed``):
        every arm and every evaluation point plays the same tasks in the same order with the same generator seeds, so
        two arms' episodes pair one to one (identical while the policies agree). The training RNG is left as it
        was. ``episodes``: ``[(step, "0110...")]``, one success bit per episode."""

        def __init__(self, args, env, config, tokenizer):
            from trl_aem.rollout.settings import RolloutSettings

            self.args, self.env, self.tokenizer, self.trainer = args, env, tokenizer, None
            self.settings = RolloutSettings.from_config(config)
            self.temperature = config.temperature
            self.count = len(env().tasks("eval")) * args.eval_episodes
            self.episodes: list[tuple[int, str]] = []

        def run(self, step: int) -> None:
            import torch

            from trl_aem.evaluation import evaluate

            with torch.random.fork_rng():
                report = evaluate(
                    self.trainer.model, self.tokenizer, self.env, episodes=self.count, split="eval",
                    settings=self.settings, temperature=self.temperature, batch_size=64, num_workers=1,
                    seed=self.args.eval_seed,
                )  # fmt: skip
            self.episodes.append((step, "".join("1" if e.success else "0" for e in report.episodes)))

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % self.args.eval_every == 0 or state.global_step == state.max_steps:
                self.run(state.global_step)

    return _PairedEval


def PairedEval(args, env, config, tokenizer):  # noqa: N802 - builds the callback (transformers imported lazily)
    return _paired_eval_class()(args, env, config, tokenizer)


def _setup_worker(threads: int) -> None:
    """A pool process: known third-party noise off, its ``--threads``, and no "Loading weights" bar (a sweep loads
    a warm start hundreds of times; the bars interleave in the log and say nothing)."""
    from transformers.utils import logging as transformers_logging

    setup_process(threads)
    transformers_logging.disable_progress_bar()


def _worker(payload: tuple) -> dict:
    args, seed, base, arm = payload
    _setup_worker(args.threads)
    return run_arm(args, seed, base, arm)


def _warm_worker(payload: tuple) -> int:
    args, seed = payload
    _setup_worker(args.threads)
    warm_start(args, seed)
    return seed


def next_task(todo: list[tuple], ready: set[int], warming: set[int]) -> tuple[str, object] | None:
    """What a free worker does next: the first RL run in ``todo`` (ordered seed by seed) whose seed's warm start is
    ``ready``, else the warm start of the first seed in ``todo`` that has none made or ``warming``, else None (wait
    for a warm start in progress). Finishing seeds in order keeps a partly done sweep complete seed by seed; making
    warm starts in the pool keeps every worker busy (they used to be made one at a time before any RL run)."""
    for job in todo:
        if job[0] in ready:
            return "run", job
    for job in todo:
        if job[0] not in ready and job[0] not in warming:
            return "warm", job[0]
    return None


# ---------------------------------------------------------------------------------------------- statistics
def bootstrap_interval(values: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampling seeds)."""
    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def t_quantile(q: float, df: int) -> float:
    """Student's t quantile by the Cornish-Fisher expansion in ``1/df`` (within 1e-3 of the exact value for df >=
    10; no scipy here)."""
    z = statistics.NormalDist().inv_cdf(q)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def detectable_difference(sd: float, seeds: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable mean paired difference of a two-sided t-test over ``seeds`` pairs whose differences have
    s.d. ``sd``: ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)``."""
    return (t_quantile(1 - alpha / 2, seeds - 1) + t_quantile(power, seeds - 1)) * sd / seeds**0.5


def final(run: dict) -> float:
    """Held-out success after the last RL step."""
    return run["held_out_success"][-1][1]


def curve_mean(run: dict) -> float:
    """Mean held-out success over the evaluations during and after RL (not the shared start): the area under the
    learning curve, which also credits learning faster when both arms end at the same level."""
    return statistics.fmean(value for step, value in run["held_out_success"] if step > 0)


METRICS = {"final": final, "curve_mean": curve_mean}


def paired(runs: list[dict], treated: tuple[str, str], control: tuple[str, str], metric: str = "final") -> dict | None:
    """``metric`` (a key of :data:`METRICS`) of ``treated`` minus ``control`` (``(base, arm)`` pairs) on the seeds
    both ran."""
    by = {(r["base"], r["arm"], r["seed"]): r for r in runs}
    seeds = sorted({s for (b, a, s) in by if (b, a) == treated} & {s for (b, a, s) in by if (b, a) == control})
    if not seeds:
        return None
    measure = METRICS[metric]
    diffs = [measure(by[(*treated, s)]) - measure(by[(*control, s)]) for s in seeds]
    low, high = bootstrap_interval(diffs)
    wins = sum(d > 0 for d in diffs)
    # after the fact: the difference this many seeds would detect at the observed spread (from 5 seeds: below 4
    # degrees of freedom t_quantile's expansion is off by several percent)
    sd = detectable = float("nan")
    if len(diffs) >= 5:
        sd = statistics.stdev(diffs)
        detectable = detectable_difference(sd, len(diffs))
    episodes = {}
    if metric == "final" and all("held_out_episodes" in by[(*arm, s)] for arm in (treated, control) for s in seeds):
        # --eval-seed: the final evaluations' episodes pair one to one (same task, same sampling seeds)
        pairs = [
            (t, c)
            for s in seeds
            for t, c in zip(
                by[(*treated, s)]["held_out_episodes"][-1][1], by[(*control, s)]["held_out_episodes"][-1][1],
                strict=True,
            )
        ]  # fmt: skip
        episodes = {
            "paired_episodes": len(pairs),
            "treated_only": sum(t == "1" and c == "0" for t, c in pairs),
            "control_only": sum(t == "0" and c == "1" for t, c in pairs),
        }
    return {
        "metric": metric,
        "treated": "/".join(treated),
        "control": "/".join(control),
        "seeds": len(seeds),
        "mean_difference": statistics.fmean(diffs),
        "ci95": [low, high],
        "wins": wins,
        "losses": sum(d < 0 for d in diffs),
        "sd_difference": sd,
        "detectable_difference": detectable,
        "differences": diffs,
        **episodes,
    }


def training_success(run: dict, window: int = 20) -> tuple[float, float]:
    """Mean training success rate over the first and the last ``window`` RL steps (at most half the run each):
    whether RL improved the policy on its own training tasks, apart from generalising to held-out ones."""
    values = [value for _, value in run["train_success"]]
    window = max(1, min(window, len(values) // 2))
    return statistics.fmean(values[:window]), statistics.fmean(values[-window:])


def summarise(runs: list[dict]) -> dict:
    table = {}
    for key in sorted({(r["base"], r["arm"]) for r in runs}):
        group = [r for r in runs if (r["base"], r["arm"]) == key]
        finals = [final(r) for r in group]
        starts = [r["held_out_success"][0][1] for r in group]
        training = [training_success(r) for r in group if r.get("train_success")]
        table["/".join(key)] = {
            "seeds": len(group),
            "start_mean": statistics.fmean(starts),
            "final_mean": statistics.fmean(finals),
            "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "curve_mean": statistics.fmean(curve_mean(r) for r in group),
            "raised": sum(f > s for f, s in zip(finals, starts, strict=True)),
            "lowered": sum(f < s for f, s in zip(finals, starts, strict=True)),
            "train_first": statistics.fmean(first for first, _ in training) if training else float("nan"),
            "train_last": statistics.fmean(last for _, last in training) if training else float("nan"),
        }
    return table


def comparisons(runs: list[dict], bases: list[str]) -> list[dict]:
    pairs = [((base, "aem"), (base, "base")) for base in bases]
    if "gigpo" in bases and "grpo" in bases:
        pairs += [(("gigpo", "base"), ("grpo", "base")), (("gigpo", "aem"), ("grpo", "aem"))]
    pairs += [(("grpo", name), ("grpo", "aem")) for name in ABLATIONS]
    return [result for metric in METRICS for t, c in pairs if (result := paired(runs, t, c, metric)) is not None]


def entropy_pattern(runs: list[dict], base: str) -> dict | None:
    """AEM minus base response entropy, averaged over seeds, in the steps where the base's training success rate is
    below 0.5 (failures dominate) and where it is at least 0.5 (successes dominate)."""
    by = {(r["base"], r["arm"], r["seed"]): r for r in runs}
    seeds = sorted(s for (b, a, s) in by if (b, a) == (base, "aem") and (base, "base", s) in by)
    phases: dict[str, list[float]] = {"failures_dominate": [], "successes_dominate": []}
    for seed in seeds:
        aem, control = dict(by[(base, "aem", seed)]["response_entropy"]), by[(base, "base", seed)]
        base_entropy, success = dict(control["response_entropy"]), dict(control["train_success"])
        for step, value in aem.items():
            if step in base_entropy and step in success:
                phase = "failures_dominate" if success[step] < 0.5 else "successes_dominate"
                phases[phase].append(value - base_entropy[step])
    if not seeds:
        return None
    return {
        phase: {"steps": len(values), "mean_entropy_difference": statistics.fmean(values) if values else None}
        for phase, values in phases.items()
    }


def drift_pattern(runs: list[dict], base: str) -> dict | None:
    """The paper's direction result, read from the AEM runs' own batches: per training step the entropy drift of
    AEM's advantages (``aem/drift``) and of the base advantages on the same batch (``aem/drift_base``), split by
    that run's training success rate (below 0.5: failures dominate, where AEM should raise the drift; at least 0.5:
    successes dominate, where it should lower it). Negative drift lowers entropy. None without recorded drifts."""
    phases: dict[str, list[tuple[float, float]]] = {"failures_dominate": [], "successes_dominate": []}
    for run in runs:
        if (run["base"], run["arm"]) != (base, "aem") or not run.get("drift_base"):
            continue
        aem, control, success = dict(run["drift"]), dict(run["drift_base"]), dict(run["train_success"])
        for step, value in aem.items():
            if step in control and step in success and math.isfinite(value) and math.isfinite(control[step]):
                phase = "failures_dominate" if success[step] < 0.5 else "successes_dominate"
                phases[phase].append((value, control[step]))
    if not any(phases.values()):
        return None
    return {
        phase: {
            "steps": len(pairs),
            "drift_aem": statistics.fmean(a for a, _ in pairs) if pairs else None,
            "drift_base": statistics.fmean(b for _, b in pairs) if pairs else None,
            "aem_above_base": sum(a > b for a, b in pairs) / len(pairs) if pairs else None,
        }
        for phase, pairs in phases.items()
    }


# ---------------------------------------------------------------------------------------------- report
def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for key in sorted({(r["base"], r["arm"]) for r in runs}):
        group = [r for r in runs if (r["base"], r["arm"]) == key]
        if len(group) < 2:
            continue  # ablations on few seeds stay in the tables
        steps = [s for s, _ in group[0]["held_out_success"]]
        values = [[v for _, v in r["held_out_success"]] for r in group]
        mean = [statistics.fmean(col) for col in zip(*values, strict=True)]
        sem = [statistics.stdev(col) / len(col) ** 0.5 for col in zip(*values, strict=True)]
        (line,) = ax.plot(steps, mean, marker="o", label=f"{key[0]}/{key[1]} (n={len(group)})")
        ax.fill_between(
            steps, [m - e for m, e in zip(mean, sem, strict=True)], [m + e for m, e in zip(mean, sem, strict=True)],
            color=line.get_color(), alpha=0.12,
        )  # fmt: skip
        entropy = [[v for _, v in r["response_entropy"]] for r in group]
        width = min(len(e) for e in entropy)
        ax2.plot(
            [s for s, _ in group[0]["response_entropy"]][:width],
            [statistics.fmean(c[i] for c in entropy) for i in range(width)],
            color=line.get_color(),
            label=f"{key[0]}/{key[1]}",
        )
    ax.set(xlabel="RL step", ylabel="held-out success rate", title=title)
    ax2.set(xlabel="RL step", ylabel="response entropy (nats)", title="mean per-response entropy (train)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args, command: str, runs: list[dict], wall: float, reused: int = 0) -> str:
    """Write ``learning_<env>.json``, ``.md`` and ``.png``; ``wall`` is this invocation's time and ``reused`` the
    runs it took from earlier invocations (so the time is not mistaken for the cost of every run)."""
    import torch

    results = Path(args.results_dir)
    table = summarise(runs)
    compared = comparisons(runs, args.losses)
    patterns = {base: entropy_pattern(runs, base) for base in args.losses}
    drifts = {base: drift for base in args.losses if (drift := drift_pattern(runs, base))}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    name = args.results_name or f"learning_{args.env}"
    payload = {
        "benchmark": "learning",
        "command": command,
        "table": table,
        "comparisons": compared,
        "entropy_pattern": patterns,
        "drift_pattern": drifts,
        "runs": runs,
        "device": device,
        "platform": platform.platform(),
        "wall_s": round(wall, 1),
        "runs_reused": reused,
        "run_minutes": round(sum(r["seconds"] for r in runs) / 60, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(runs, results / f"{name}.png", f"{args.env}: held-out success (mean ± s.e. over seeds)")
    eval_episodes = args.config_overrides["num_generations_eval"]
    lines = [
        f"# Learning: AEM vs base on {args.env} ({args.model} model, {device})",
        "",
        f"`{command}`, {payload['date']}, {wall / 60:.0f} min"
        + (
            f" (this invocation; {reused} of the {len(runs)} runs came from earlier ones with the same options)"
            if reused
            else ""
        )
        + f"; the RL runs took {payload['run_minutes']:.0f} worker-minutes in all ({args.jobs} workers; SFT warm "
        f"starts not counted). Held-out success rate before RL and after "
        f"{args.steps} RL steps (eval tasks x {eval_episodes} episodes each), from one SFT warm start per seed.",
        "",
        "| base / arm | seeds | before RL | after RL (mean) | std | mean over the RL evaluations "
        f"| RL raised / lowered it (seeds) | training success, first → last {max(1, min(20, args.steps // 2))} steps |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {key} | {row['seeds']} | {row['start_mean']:.3f} | {row['final_mean']:.3f} | {row['final_std']:.3f} "
            f"| {row['curve_mean']:.3f} | {row['raised']} / {row['lowered']} "
            f"| {row['train_first']:.3f} → {row['train_last']:.3f} |"
            for key, row in table.items()
        ),
        "",
        "Paired by seed (same warm start): treated minus control, mean and 95% bootstrap interval over seeds, of the "
        "final held-out success (`final`) and of the mean held-out success over the RL evaluations (`curve_mean`, "
        "the area under the learning curve); the s.d. of the seeds' differences and the difference that spread lets "
        "this many seeds detect (two-sided t-test, 5% level, 80% power).",
        "",
        "| treated − control | metric | seeds | mean difference | 95% interval | wins / losses | s.d. | detectable |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {c['treated']} − {c['control']} | {c['metric']} | {c['seeds']} | {c['mean_difference']:+.3f} | "
            f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] | {c['wins']} / {c['losses']} | "
            f"{c.get('sd_difference', float('nan')):.3f} | {c.get('detectable_difference', float('nan')):.3f} |"
            for c in compared
        ),
        "",
        "Response entropy, AEM minus base (nats, per training step, mean over seeds), split by the base run's "
        "training success rate at that step:",
        "",
        "| base | failures dominate (success < 0.5) | successes dominate (success >= 0.5) |",
        "|---|---|---|",
        *(
            f"| {base} | {_fmt_phase(p['failures_dominate'])} | {_fmt_phase(p['successes_dominate'])} |"
            for base, p in patterns.items()
            if p
        ),
        *(
            [
                "",
                "Entropy drift in the AEM runs (the direction result; negative lowers entropy): per training step, "
                "of AEM's advantages and of the base advantages on the same batch, mean over steps and seeds, split "
                "by the run's training success rate. The paper's claim: AEM's drift is above the base's while "
                "failures dominate and below it once successes dominate.",
                "",
                "| base | phase | steps | drift (AEM) | drift (base advantages) | steps with AEM above base |",
                "|---|---|---|---|---|---|",
                *(
                    f"| {base} | {phase.replace('_', ' ')} | {row['steps']} | "
                    + (
                        f"{row['drift_aem']:+.4f} | {row['drift_base']:+.4f} | {row['aem_above_base']:.2f} |"
                        if row["steps"]
                        else "- | - | - |"
                    )
                    for base, drift in drifts.items()
                    for phase, row in drift.items()
                ),
            ]
            if drifts
            else []
        ),
        "",
        f"![held-out success and response entropy]({name}.png)",
    ]
    text = "\n".join(lines) + "\n"
    (results / f"{name}.md").write_text(text)
    return text


def _fmt_phase(phase: dict) -> str:
    value = phase["mean_entropy_difference"]
    return "no steps" if value is None else f"{value:+.4f} ({phase['steps']} steps)"


def command_line(args) -> str:
    """The command that reproduces this run (every option that is set), for the results file."""
    parts = ["python benchmarks/learning.py"]
    for name, value in vars(args).items():
        if name in LOGISTICS or value is None or value is False or value == {}:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(f"{flag} {' '.join(map(str, value))}")
        elif isinstance(value, dict):
            parts.append(f"{flag} {shlex.quote(json.dumps(value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def options_key(args, leave_out: tuple[str, ...] = ()) -> str:
    """A short hash of the options that change a run (everything but the seeds and arms to run, and ``leave_out``),
    so results of other options in the same ``--work-dir`` are never reused."""
    varying = ("seeds", "losses", "ablation_seeds", *LOGISTICS, *leave_out)
    # options added later count only when set, so earlier runs keep their hash
    options = {
        name: value
        for name, value in vars(args).items()
        if name not in varying and not (name in LATER_OPTIONS and value is None)
    }
    return hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:10]


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used to read back the command recorded in a results file, for ``--resume-from``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="vault")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--losses", nargs="+", default=["grpo", "dapo", "gigpo"], choices=BASES,
                        help="base algorithms; gigpo = GiGPO's advantage with the GRPO loss")  # fmt: skip
    parser.add_argument("--ablation-seeds", type=int, default=3, help="seeds that also run the ablations (GRPO)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--sft-steps", type=int, default=1200)
    parser.add_argument("--sft-noise", type=float, default=0.3, help="share of random actions in the demonstrations")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--sft-learning-rate",
        type=float,
        default=None,
        help="default: 2e-3 for the tiny model (3e-3 made a 128x2 one diverge), else recipes.sft_learning_rate",
    )
    parser.add_argument("--env-kwargs", type=json.loads, default=None,
                        help="JSON dict for the environment class (default: DEFAULT_ENV_KWARGS[env] or {})")  # fmt: skip
    parser.add_argument("--max-turns", type=int, default=None, help="default: recipes.STEP_MODE_BUDGETS")
    parser.add_argument("--eval-episodes", type=int, default=4, help="episodes per held-out task")
    parser.add_argument("--eval-seed", type=int, default=None,
                        help="evaluate with trl_aem.evaluation.evaluate at this sampling seed, the same for every arm "
                        "and point (episodes paired one to one, per-episode successes recorded); default: the "
                        "trainer's evaluation")  # fmt: skip
    parser.add_argument("--tasks-per-step", type=int, default=2, help="tasks per RL step (x 8 episodes)")
    parser.add_argument("--tiny-size", default="64x3", help="HIDDENxLAYERS of the tiny model")
    parser.add_argument("--env-tokenizer", action="store_true", default=True,
                        help="train the tiny tokenizer on the env's text (default)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (worker processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--work-dir", default="outputs/learning")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where the .json/.md/.png results go")
    parser.add_argument(
        "--results-name", default=None, help="the results files' name without extension (default learning_<env>)"
    )
    parser.add_argument("--fresh", action="store_true", help="ignore runs finished earlier in --work-dir")
    parser.add_argument(
        "--warm-dir",
        default=None,
        help="keep the SFT warm starts here, shared with other invocations that differ only in RL options "
        f"({', '.join(RL_ONLY)}); default: inside the run folder",
    )
    parser.add_argument(
        "--resume-from",
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="take the finished runs earlier results files recorded (same run options, else an error) into the "
        "run log, so a sweep whose work folder is gone resumes from its published results",
    )
    return parser


def parse_options(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; the environment's default arguments filled in."""
    args = parser.parse_args(argv)
    from trl_aem.recipes import STEP_MODE_BUDGETS

    if args.env not in STEP_MODE_BUDGETS:
        parser.error(f"--env must be one of {sorted(STEP_MODE_BUDGETS)}")
    if args.seeds < 1 or args.steps < 1 or args.eval_every < 1 or args.jobs < 1:
        parser.error("--seeds, --steps, --eval-every and --jobs must be >= 1")
    if args.env_kwargs is None:
        args.env_kwargs = dict(DEFAULT_ENV_KWARGS.get(args.env, {}))
    if not isinstance(args.env_kwargs, dict):
        parser.error(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    return args


def recorded_runs(path: str, key: str) -> list[dict]:
    """The runs recorded in the results file at ``path`` (written by this script), checked to come from the same
    run options (``key``, from :func:`options_key`): SystemExit with the reason otherwise."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--resume-from {path}: cannot read it ({error})") from None
    if not isinstance(results, dict) or results.get("benchmark") != "learning" or "command" not in results:
        raise SystemExit(f"--resume-from {path}: not a results file of benchmarks/learning.py")
    words = shlex.split(results["command"])
    recorded = parse_options(build_parser(), words[2:] if words[:2] == ["python", "benchmarks/learning.py"] else words)
    if options_key(recorded) != key:
        raise SystemExit(
            f"--resume-from {path}: its runs were made with other run options; its command was\n  {results['command']}"
        )
    return results.get("runs", [])


def main() -> None:
    parser = build_parser()
    args = parse_options(parser)
    command = command_line(args)
    key = options_key(args)
    args.work_dir = os.path.join(args.work_dir, args.env, key)
    # warm starts: in the run folder, or shared under --warm-dir by every invocation whose warm-start options agree
    args.warm_root = (
        os.path.join(args.warm_dir, args.env, options_key(args, leave_out=RL_ONLY)) if args.warm_dir else args.work_dir
    )
    args.config_overrides = {
        "num_generations_eval": args.eval_episodes,
        "per_device_train_batch_size": 8 * args.tasks_per_step,
        "num_generations": 8,
        "rollout_waves": 1,  # instant environments: one generate call per turn (waves only hide slow env steps)
    }
    if args.max_turns is not None:
        args.config_overrides["max_turns"] = args.max_turns
    args.tiny_kwargs = {}
    if args.model == "tiny" and args.tiny_size:
        try:
            hidden, layers = (int(v) for v in args.tiny_size.lower().split("x"))
        except ValueError:
            parser.error(f"--tiny-size must look like 64x2 (hidden size x layers), got {args.tiny_size!r}")
        args.tiny_kwargs = {"hidden_size": hidden, "num_layers": layers}
    if args.model != "tiny":
        args.env_tokenizer = False
    os.makedirs(args.work_dir, exist_ok=True)
    log_path = Path(args.work_dir) / "runs.jsonl"
    if args.fresh and log_path.exists():
        log_path.unlink()
    done = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    finished = {(r["seed"], r["base"], r["arm"]) for r in done}
    for path in args.resume_from or ():
        taken = [r for r in recorded_runs(path, key) if (r["seed"], r["base"], r["arm"]) not in finished]
        with log_path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in taken)
        done += taken
        finished |= {(r["seed"], r["base"], r["arm"]) for r in taken}
        print(f"--resume-from: {len(taken)} finished runs taken from {path}", flush=True)

    started = time.time()
    setup_process(args.threads)  # this process only schedules and reports (torch, matplotlib): quiet
    todo = [(seed, base, arm) for seed in range(args.seeds) for base in args.losses for arm in ("base", "aem")] + [
        (seed, "grpo", name) for seed in range(min(args.ablation_seeds, args.seeds)) for name in ABLATIONS
    ]
    todo = sorted((job for job in todo if job not in finished), key=lambda job: job[0])  # seed by seed
    total = len(todo) + len(done)
    ready = {
        seed for seed in range(args.seeds) if os.path.exists(os.path.join(warm_folder(args, seed), "config.json"))
    }
    warming: set[int] = set()
    runs = list(done)
    events: queue.SimpleQueue = queue.SimpleQueue()  # (kind, job, result, error) from the pool's result thread
    in_flight = 0
    context = mp.get_context("spawn")
    # a plain SIGTERM (kill, pkill) would end this process and leave the spawned workers training: exit through
    # the `with` block instead, whose Pool.__exit__ terminates them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with context.Pool(args.jobs, maxtasksperchild=1) as pool:

        def launch() -> None:
            nonlocal in_flight
            while in_flight < args.jobs and (task := next_task(todo, ready, warming)) is not None:
                kind, job = task
                if kind == "warm":
                    warming.add(job)
                    function, payload = _warm_worker, (args, job)
                else:
                    todo.remove(job)
                    function, payload = _worker, (args, *job)
                pool.apply_async(
                    function,
                    (payload,),
                    callback=lambda result, kind=kind, job=job: events.put((kind, job, result, None)),
                    error_callback=lambda error, kind=kind, job=job: events.put((kind, job, None, error)),
                )
                in_flight += 1

        launch()
        while in_flight:
            kind, job, result, error = events.get()
            in_flight -= 1
            if error is not None:
                raise RuntimeError(f"{kind} {job} failed") from error
            if kind == "warm":
                warming.discard(job)
                ready.add(job)
                print(f"seed {job}: warm start ready", flush=True)
            else:
                runs.append(result)
                with log_path.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                print(
                    f"[{len(runs)}/{total}] seed {result['seed']} {result['base']}/{result['arm']}: "
                    f"held-out {result['held_out_success']} ({result['seconds']:.0f} s)",
                    flush=True,
                )
            launch()
    print(report(args, command, runs, time.time() - started, reused=len(done)))


if __name__ == "__main__":
    sys.exit(main())
