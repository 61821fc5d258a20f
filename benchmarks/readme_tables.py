"""Copy the benchmark tables from ``benchmarks/results/*.md`` into ``docs/benchmarks.md``, between the markers
``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->``, so the docs quote exactly what the scripts wrote
(never numbers typed by hand). The README links that page; it holds no tables itself.

    python benchmarks/readme_tables.py          # rewrite the block in docs/benchmarks.md
    python benchmarks/readme_tables.py --check  # exit 1 if the block is stale
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET = ROOT / "docs" / "benchmarks.md"
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
    "proxy.md",
    "regime_pilot.md",
    "stability_vault.md",
    "learning_vault_hard.md",
]


def block() -> str:
    # images beside a results file, linked relative to the page that quotes it
    images = Path(os.path.relpath(RESULTS, TARGET.parent)).as_posix()
    parts = []
    for name in ORDER:
        path = RESULTS / name
        if path.exists():
            text = path.read_text().strip()
            text = re.sub(r"\]\((?!https?://|/)([^)]+\.png)\)", rf"]({images}/\1)", text)
            parts.append(text.replace("# ", "#### ", 1) if text.startswith("# ") else text)
    return "\n\n".join([START, *parts, END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    name = TARGET.relative_to(ROOT)
    page = TARGET.read_text()
    if START not in page or END not in page:
        sys.exit(f"{name} has no {START} ... {END} block")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    updated = head + block() + tail
    if args.check:
        sys.exit(
            0 if updated == page else f"{name} benchmark tables are stale: run python benchmarks/readme_tables.py"
        )
    TARGET.write_text(updated)


if __name__ == "__main__":
    main()
