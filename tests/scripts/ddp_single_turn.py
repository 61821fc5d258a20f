"""Run under `torchrun --nproc_per_node 2`: one GRPO group of 8 completions split 4 + 4 across ranks.

Each rank saves what AEM saw and applied (gathered statistics, group ids, its own alpha slice, base and
modulated advantages) so the test can check the two ranks against a one-process computation.
"""

import os
import sys

import torch
from datasets import Dataset

from trl_aem import AEMConfig, AEMTrainer
from trl_aem.tiny import build_model, build_tokenizer

out_dir = sys.argv[1]
scope = sys.argv[2] if len(sys.argv) > 2 else "group"


class RecordingTrainer(AEMTrainer):
    records: list = []

    def _aem_advantages(self, output, groups, token_stats, mode):
        result = super()._aem_advantages(output, groups, token_stats, mode)
        self.records.append({"local": result.responses, "alpha": result.alpha})
        return result

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.records[-1]["base"] = torch.tensor(list(self._logs["advantages"])[-8:])
        self.records[-1]["advantages"] = output["advantages"].cpu()
        self.records[-1]["completion_mask"] = output["completion_mask"].cpu()
        return output


def reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 5) for c in completions]


tokenizer = build_tokenizer()
model = build_model(tokenizer, seed=0)
dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": f"task {i}"}] for i in range(8)]})
config = AEMConfig(
    output_dir=os.path.join(out_dir, "run"),
    per_device_train_batch_size=4,
    num_generations=8,
    max_completion_length=12,
    max_steps=2,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    bf16=False,
    save_strategy="no",
    aem_scope=scope,
    gradient_checkpointing=False,
    learning_rate=1e-3,
)
trainer = RecordingTrainer(
    model, config=config, train_dataset=dataset, processing_class=tokenizer, reward_funcs=reward
)
trainer.train()
rank = trainer.accelerator.process_index
full_records = []
for record in trainer.records:
    local = record["local"]
    full_records.append(
        {
            "entropy": local.entropy,
            "group": local.group,
            "episode": local.episode,
            "alpha": record["alpha"],
            "base": record["base"],
            "advantages": record["advantages"],
            "completion_mask": record["completion_mask"],
        }
    )
torch.save(
    {
        "records": full_records,
        "num_processes": trainer.accelerator.num_processes,
        "log_history": trainer.state.log_history,
    },
    os.path.join(out_dir, f"rank{rank}.pt"),
)
