"""The table of TRL overrides and runtime patches (trl_aem/trl_compat.py) against what the code does.

An override or a patch added without its table entry (or an entry left behind after one is removed) fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import trl
from trl import GRPOTrainer

import trl_aem
from trl_aem import AEMTrainer
from trl_aem.sampling import sample_with_statistics
from trl_aem.trl_compat import OVERRIDES, PATCHES, TRL_VERSION, temporarily

PACKAGE = Path(trl_aem.__file__).parent


def actual_overrides(trainer_class: type) -> set[str]:
    """``Class.method`` for every attribute a trl_aem class of ``trainer_class``'s MRO defines that a
    ``GRPOTrainer`` ancestor (TRL, transformers) also defines: ``vars()`` of each class intersected with
    ``GRPOTrainer``'s attributes."""
    inherited = set(dir(GRPOTrainer))
    found = set()
    for cls in trainer_class.__mro__:
        if not cls.__module__.startswith("trl_aem"):
            continue
        for name, value in vars(cls).items():
            if name in inherited and callable(value) and not (name.startswith("__") and name.endswith("__")):
                found.add(f"{cls.__name__}.{name}")
    return found


def patch_ids_in_source() -> dict[str, list[str]]:
    """Every ``temporarily("<patch id>", ...)`` call in the package: patch id -> files."""
    calls: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "temporarily"
            ):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant), f"{path}: temporarily() needs a literal patch id"
                calls.setdefault(first.value, []).append(str(path.relative_to(PACKAGE)))
    return calls


def test_override_table_matches_the_classes():
    assert actual_overrides(AEMTrainer) == set(OVERRIDES)


def test_an_override_without_a_table_entry_is_found():
    class Extra(AEMTrainer):
        def _calculate_rewards(self, *args, **kwargs):  # a GRPOTrainer method, not in the table
            return super()._calculate_rewards(*args, **kwargs)

    Extra.__module__ = "trl_aem.extra"
    assert actual_overrides(Extra) - set(OVERRIDES) == {"Extra._calculate_rewards"}


def test_every_override_calls_super():
    """Each override wraps TRL's method (the table says what it adds): it calls ``super()``, or the TRL method itself
    through a method or function it delegates to (``_generate_and_score_completions`` -> ``_score_with_trl``,
    ``_generate_single_turn`` -> ``sampling.sample_with_statistics``)."""
    # TRL's card generator only reads templates from the trl package: the trl_aem card replaces it whole
    replaced = {"HubMixin.create_model_card"}
    for entry in set(OVERRIDES) - replaced:
        class_name, method = entry.split(".")
        cls = next(c for c in AEMTrainer.__mro__ if c.__name__ == class_name)
        source = inspect.getsource(vars(cls)[method])
        helpers = re.findall(r"self\.(_[a-z_]+)\(", source)  # methods of the trainer it delegates to
        sources = [source] + [inspect.getsource(getattr(AEMTrainer, h)) for h in helpers if hasattr(AEMTrainer, h)]
        calls_trl = any("super()" in text for text in sources) or (
            "sample_with_statistics(" in source
            and f"GRPOTrainer.{method}(trainer" in inspect.getsource(sample_with_statistics)
        )
        assert calls_trl, f"{entry} does not call super()"


def test_patch_table_matches_the_code():
    assert set(patch_ids_in_source()) == set(PATCHES)


def test_no_runtime_patch_outside_temporarily():
    """Assignments to another object's attribute that restore it later are what `temporarily` is for: no
    try/finally around a swapped attribute, no monkeypatching of a module, outside trl_compat."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "trl_compat.py" or "envs" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and node.finalbody:
                for stmt in node.finalbody:
                    for target in getattr(stmt, "targets", []):
                        # the trainer's own per-batch field, closed by `capturing`, is trl_aem state, not a patch
                        own = isinstance(target, ast.Attribute) and target.attr == "_capture"
                        assert not isinstance(target, ast.Attribute) or own, (
                            f"{path.relative_to(PACKAGE)}:{stmt.lineno} restores an attribute in a finally block; "
                            "use trl_compat.temporarily with a PATCHES entry"
                        )


def test_temporarily_restores_exactly():
    class Holder:
        value = 1

    holder, table = Holder(), {"a": 1}
    with temporarily("turn_tokens_vllm", holder, "value", 5), temporarily("turn_tokens_transformers", table, "b", 2):
        assert holder.value == 5 and table == {"a": 1, "b": 2}
    assert "value" not in vars(holder) and holder.value == 1 and table == {"a": 1}
    holder.value = 3
    with temporarily("turn_tokens_vllm", holder, "value", 7):
        assert holder.value == 7
    assert vars(holder)["value"] == 3
    with pytest.raises(KeyError, match="not in trl_aem.trl_compat.PATCHES"), temporarily("nope", holder, "value", 0):
        pass


def test_table_is_for_the_installed_trl():
    """The line numbers in the table are trl 1.16.0's; pyproject pins trl to that minor release."""
    assert trl.__version__.split(".")[:2] == TRL_VERSION.split(".")[:2]
