"""Copy the benchmark tables from ``benchmarks/results/*.md`` into the README, between the markers
``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->``, so the README quotes exactly what the
scripts wrote (never numbers typed by hand).

    python benchmarks/readme_tables.py          # rewrite the README block
    python benchmarks/readme_tables.py --check  # exit 1 if the README block is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
# shown in this order when present; a results file's own "# title" line becomes a "####" heading
ORDER = [
    "overhead.md",
    "overhead_50m.md",
    "overhead_cuda.md",
    "overhead_50m_cuda.md",
    "overhead_qwen0.5b_cuda.md",
    "rollout.md",
    "envs.md",
    "swe.md",
    "learning_vault.md",
    "learning_keyword.md",
    "learning_alfworld.md",
]


def block() -> str:
    parts = []
    for name in ORDER:
        path = RESULTS / name
        if path.exists():
            text = path.read_text().strip()
            text = re.sub(r"\]\((?!https?://|/)([^)]+\.png)\)", r"](benchmarks/results/\1)", text)  # images beside it
            parts.append(text.replace("# ", "#### ", 1) if text.startswith("# ") else text)
    return "\n\n".join([START, *parts, END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme = (ROOT / "README.md").read_text()
    if START not in readme or END not in readme:
        sys.exit(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = head + block() + tail
    if args.check:
        sys.exit(
            0 if updated == readme else "README benchmark tables are stale: run python benchmarks/readme_tables.py"
        )
    (ROOT / "README.md").write_text(updated)


if __name__ == "__main__":
    main()
