"""The Hub side of ``trl_aem``: standard model cards, training curves, resilient pushes, evaluation results."""

from .card import ENV_SETTINGS_FILE, CardInputs, card_context, render_card, write_model_card
from .curves import CURVES_FILE, plot_training_curves
from .push import PushStats, ResilientHubApi, download_checkpoint, trainer_hub_api
from .results import push_eval_results

__all__ = [
    "CURVES_FILE",
    "CardInputs",
    "ENV_SETTINGS_FILE",
    "PushStats",
    "ResilientHubApi",
    "card_context",
    "download_checkpoint",
    "plot_training_curves",
    "push_eval_results",
    "render_card",
    "trainer_hub_api",
    "write_model_card",
]
