"""docs/architecture.md's walks of one batch: every ``file:function`` they name exists, and they stay short.

A walk is a table whose rows are ``| n | `file:function` | what | uses |``; the count of returns (a hop into a
file an earlier hop already visited, consecutive hops in one file being one visit) is what issue 22 bounds.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
REF = re.compile(r"`(trl_aem/[\w/]+\.py):([\w.]+)`")
MAX_RETURNS = 10


def walks() -> dict[str, list[tuple[str, str, list[tuple[str, str]]]]]:
    """Section title -> hops ``(file, function, uses)`` of every walk table in the page."""
    out: dict[str, list] = {}
    for section in re.split(r"^## ", DOC, flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0].strip()
        hops = []
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
            if len(cells) >= 4 and cells[0].isdigit():
                hop = REF.fullmatch(cells[1])
                assert hop, f"{title}: hop {cells[0]} is not a `file:function`: {cells[1]}"
                hops.append((hop[1], hop[2], REF.findall(cells[-1])))
        if hops:
            out[title] = hops
    return out


def returns(hops: list[tuple[str, str, list]]) -> int:
    visited, previous, count = set(), None, 0
    for file, _, _ in hops:
        if file != previous:
            count += file in visited
            visited.add(file)
            previous = file
    return count


def resolve(file: str, qualname: str):
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    value = module
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def test_the_page_has_both_walks():
    titles = list(walks())
    assert any(t.startswith("Step mode") for t in titles) and any(t.startswith("Trajectory mode") for t in titles)


@pytest.mark.parametrize("title", list(walks()))
def test_walk_names_real_functions_and_stays_short(title):
    hops = walks()[title]
    for file, function, uses in hops:
        resolve(file, function)
        for used_file, used in uses:
            resolve(used_file, used)
    assert returns(hops) <= MAX_RETURNS
    # the page states the counts it shows
    section = DOC.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    files = len({file for file, _, _ in hops})
    assert f"Files: {files}. Returns to an already-visited file: {returns(hops)}" in section


def test_every_function_referenced_anywhere_on_the_page_exists():
    for file, name in REF.findall(DOC):
        resolve(file, name)
