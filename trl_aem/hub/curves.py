"""Training curves (success rate, return, response entropy, alpha spread against step) from ``log_history``."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

__all__ = ["CURVES_FILE", "PANELS", "curve_series", "plot_training_curves"]

CURVES_FILE = "training_curves.png"

# panel title -> [(label, log key), ...]; a panel is drawn when any of its keys was logged
PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Success rate", [("train", "env/success_rate"), ("eval", "eval_env/success_rate")]),
    ("Return", [("train", "env/return"), ("eval", "eval_env/return")]),
    ("Reward", [("train", "reward"), ("eval", "eval_reward")]),
    ("Response entropy (nats)", [("train", "aem/response_entropy"), ("eval", "eval_aem/response_entropy")]),
    ("AEM alpha", [("min", "aem/alpha_min"), ("max", "aem/alpha_max"), ("std", "aem/alpha_std")]),
]


def curve_series(log_history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of every finite logged value of ``key``."""
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in entry:
            steps.append(float(entry["step"]))
            values.append(float(value))
    return steps, values


def plot_training_curves(log_history: Sequence[dict], path: str | os.PathLike) -> bool:
    """Write the curves PNG to ``path``; ``False`` (and no file) when nothing plottable was logged yet.

    Environment runs show success rate and return; single-turn runs, which log no ``env/*`` metric, show the
    reward instead. The alpha panel shades the range between ``aem/alpha_min`` and ``aem/alpha_max``.
    """
    env_run = bool(curve_series(log_history, "env/return")[0])
    panels = []
    for title, keys in PANELS:
        if title == "Reward" and env_run:
            continue
        series = [(label, *curve_series(log_history, key)) for label, key in keys]
        if any(steps for _, steps, _ in series):
            panels.append((title, series))
    if not panels:
        return False

    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: training machines have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        by_label = {label: (steps, values) for label, steps, values in series}
        if title == "AEM alpha" and by_label["min"][0] and by_label["max"][0]:
            ax.fill_between(*by_label["min"], by_label["max"][1], alpha=0.25, label="min-max")
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
            if by_label["std"][0]:
                ax.plot(*by_label["std"], marker=".", label="std")
        else:
            for label, (steps, values) in by_label.items():
                if steps:
                    ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
