"""Render the standard trl_aem model card from a short offline run (the example in docs/).

    python examples/render_card.py                     # writes docs/example_model_card.md and its curves PNG
    python examples/render_card.py --steps 20 --out /tmp/card

Trains the embedded tiny model (``trl_aem.tiny``) for a few steps in the built-in ``keyword`` environment (step
rollouts, evaluation every few steps) and writes the card exactly as ``AEMTrainer`` writes it at every save,
with the image link renamed to the copied PNG. Nothing is downloaded or pushed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl_aem import AEMConfig, AEMTrainer  # noqa: E402
from trl_aem.envs import get_env  # noqa: E402
from trl_aem.hub import CURVES_FILE  # noqa: E402
from trl_aem.tiny import build_model, build_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="training steps")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs"), help="output folder")
    parser.add_argument("--name", default="example", help="file prefix: NAME_model_card.md, NAME_training_curves.png")
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory() as run_dir:
        config = AEMConfig(
            output_dir=run_dir,
            hub_model_id="your-name/keyword-aem",  # only names the repository in the card; nothing is pushed
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=64,
            max_steps=args.steps,
            learning_rate=1e-3,
            logging_steps=1,
            eval_strategy="steps",
            eval_steps=max(1, args.steps // 3),
            per_device_eval_batch_size=8,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            rollout_mode="step",
            max_turns=3,
            history_length=2,
            max_turn_tokens=12,
            seed=0,
        )
        trainer = AEMTrainer(build_model(tokenizer, seed=0), get_env("keyword"), config, processing_class=tokenizer)
        trainer.train()
        trainer.create_model_card()

        os.makedirs(args.out, exist_ok=True)
        png = f"{args.name}_training_curves.png"
        shutil.copy(os.path.join(run_dir, CURVES_FILE), os.path.join(args.out, png))
        with open(os.path.join(run_dir, "README.md"), encoding="utf-8") as f:
            card = f.read().replace(f"]({CURVES_FILE})", f"]({png})")
    path = os.path.join(args.out, f"{args.name}_model_card.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(card)
    print(f"wrote {os.path.normpath(path)} and {os.path.normpath(os.path.join(args.out, png))}")


if __name__ == "__main__":
    main()
