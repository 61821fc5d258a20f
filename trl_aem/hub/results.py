"""Write environment evaluation results into a model card, on the Hub or in a local model folder: its ``model-index``
and results table."""

from __future__ import annotations

import datetime
import os
import re

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import EntryNotFoundError

from .card import EVAL_MARKERS, eval_results_from_metrics

__all__ = [
    "carry_over_cli_evaluations",
    "merge_eval_results",
    "push_eval_results",
    "update_eval_block",
    "with_eval_results",
    "write_eval_results",
]

_HEADER = [
    "| Environment | Split | Episodes | Success rate | Return | Turns | Invalid-action rate | Date |",
    "|---|---|---|---|---|---|---|---|",
]


def _key(result: EvalResult) -> tuple:
    return result.task_type, result.dataset_type, result.dataset_split, result.metric_type


def merge_eval_results(old: list[EvalResult] | None, new: list[EvalResult]) -> list[EvalResult]:
    """``old`` with every metric that ``new`` measures again replaced (same task, environment, split, metric)."""
    replaced = {_key(r) for r in new}
    return [r for r in old or [] if _key(r) not in replaced] + list(new)


def update_eval_block(text: str, row: str, env_name: str, split: str) -> str:
    """Put ``row`` into the card's ``trl-aem eval`` table (between :data:`EVAL_MARKERS`), replacing the row of
    the same environment and split; appends the block when the card has no markers."""
    start, end = EVAL_MARKERS
    if start not in text or end not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    block, tail = rest.split(end, 1)
    prefix = f"| `{env_name}` | {split} |"
    rows = [line for line in block.splitlines() if line.startswith("| `") and not line.startswith(prefix)]
    rows.append(row)
    new_block = "\n### Evaluations with `trl-aem eval`\n\n" + "\n".join(_HEADER + sorted(rows)) + "\n"
    return f"{head}{start}{new_block}{end}{tail}"


def with_eval_results(
    card: ModelCard, metrics: dict[str, float], *, env_name: str, split: str, episodes: int, model_name: str
) -> ModelCard:
    """``card`` with one evaluation merged in: its ``model-index`` entries (replacing those of the same environment,
    split and metric) and its row of the ``trl-aem eval`` results table. ``metrics`` holds ``success_rate``,
    ``return``, ``turns`` and ``invalid_rate``; ``model_name`` names the model-index when the card has no name."""
    data = card.data
    if not getattr(data, "model_name", None):
        data.model_name = model_name
    data.eval_results = merge_eval_results(
        data.eval_results, eval_results_from_metrics(metrics, env_name=env_name, split=split)
    )
    cells = [f"{metrics[k]:.3f}" if k in metrics else "-" for k in ("success_rate", "return", "turns", "invalid_rate")]
    today = datetime.date.today().isoformat()
    row = f"| `{env_name}` | {split} | {episodes} | " + " | ".join(cells) + f" | {today} |"
    body = update_eval_block(card.text, row, env_name, split)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_strip_leading_newline(body)}")


def _new_card(title: str) -> ModelCard:
    return ModelCard(f"---\n{ModelCardData(library_name='transformers').to_yaml()}\n---\n\n# {title}\n")


def push_eval_results(
    repo_id: str,
    metrics: dict[str, float],
    *,
    env_name: str,
    split: str,
    episodes: int,
    token: str | None = None,
    revision: str | None = None,
) -> ModelCard:
    """Merge one evaluation into the card of ``repo_id`` on the Hub (``model-index`` and the results table) and
    push it. ``metrics`` holds ``success_rate``, ``return``, ``turns`` and ``invalid_rate``."""
    try:
        card = ModelCard.load(repo_id, token=token)
    except EntryNotFoundError:  # a repository without a card: start a minimal one
        card = _new_card(repo_id)
    card = with_eval_results(
        card, metrics, env_name=env_name, split=split, episodes=episodes, model_name=repo_id.split("/")[-1]
    )
    # HfApi() rather than ModelCard.push_to_hub, which uses huggingface_hub's module-level client (its endpoint is
    # fixed when huggingface_hub is imported)
    HfApi(token=token).upload_file(
        path_or_fileobj=str(card).encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        revision=revision,
        commit_message=f"trl-aem eval: {env_name} ({split}, {episodes} episodes)",
    )
    return card


def write_eval_results(
    folder: str | os.PathLike, metrics: dict[str, float], *, env_name: str, split: str, episodes: int
) -> ModelCard:
    """Merge one evaluation into the card of a local model folder (its ``README.md``: ``model-index`` and the
    results table, as :func:`push_eval_results` does on the Hub), starting a minimal card when it has none."""
    path = os.path.join(folder, "README.md")
    name = os.path.basename(os.path.abspath(folder))
    card = ModelCard.load(path) if os.path.isfile(path) else _new_card(name)
    card = with_eval_results(card, metrics, env_name=env_name, split=split, episodes=episodes, model_name=name)
    card.save(path)
    return card


def carry_over_cli_evaluations(card: ModelCard, hub_card: ModelCard) -> ModelCard:
    """``card`` (freshly rendered at a save) with the ``trl-aem eval`` results that ``hub_card`` (the card on the
    Hub) holds: its results table and the ``model-index`` entries of the environments and splits in that table,
    so a checkpoint push does not erase what ``trl-aem eval --push-results`` wrote since the last one. Where the
    new card measures the same metric again (the trainer's own evaluation), the new value wins."""
    start, end = EVAL_MARKERS
    hub_text = hub_card.text
    if start not in hub_text or end not in hub_text:
        return card
    block = hub_text.split(start, 1)[1].split(end, 1)[0]
    pairs = set()
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) > 1:
            pairs.add((cells[0].strip("`"), cells[1]))
    if not pairs:
        return card
    text = card.text
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = f"{head}{start}{block}{end}{rest.split(end, 1)[1]}"
    else:
        text = text.rstrip("\n") + f"\n\n{start}{block}{end}\n"
    data = card.data
    carried = [r for r in hub_card.data.eval_results or [] if (r.dataset_type, r.dataset_split) in pairs]
    if carried:
        if not getattr(data, "model_name", None):
            data.model_name = getattr(hub_card.data, "model_name", None) or "model"
        data.eval_results = merge_eval_results(carried, list(data.eval_results or []))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_strip_leading_newline(text)}")


def _strip_leading_newline(text: str) -> str:
    return re.sub(r"^\n+", "\n", text)
