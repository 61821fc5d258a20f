#!/usr/bin/env bash
# AEM against its base on a paper environment, on one GPU, in one device call of under 10 minutes, offline.
#
# The device machine (an H200 here) has PyTorch but not TRL, datasets or this project's pinned transformers, and it
# cannot reach the network. So:
#   1. here, once:   bash benchmarks/gpu_learning.sh --prepare      (pip downloads the wheels into .whl/, ~21 MiB)
#   2. the device:   bash benchmarks/gpu_learning.sh                (with .whl carried, results written to $OUT)
#      or:           bash benchmarks/gpu_learning.sh vault-hard     (issue 26's hard vault regime, a 13x larger model)
#      e.g. the device tool's run(command="bash benchmarks/gpu_learning.sh", carry=[".whl"], timeout_s=600)
#
# What it runs: benchmarks/learning.py on offline WebShop (the generated catalog: no data to download) with a tiny
# model trained from scratch on the GPU (its tokenizer trained on WebShop's text, SFT on expert demonstrations
# with 10% random actions, then RL), GRPO against GRPO + AEM and GiGPO against GiGPO + AEM, paired by seed. Sizes are
# set so that the whole call, install included, ends within about 9 minutes; LEARNING_ARGS overrides them.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(trl==1.16.0 transformers==5.24.0 datasets==5.2.0 huggingface-hub==2.4.0 peft==0.21.2 rank-bm25==0.2.2
        dill==0.4.1 multiprocess==0.70.19 httpx2==2.16.2 httpcore2 truststore click==8.5.1 hf-xet==1.8.0
        regex==2026.11.19)

if [ "${1:-}" = "--prepare" ]; then
    grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}"
    du -sh .whl
    exit 0
fi

[ -d .whl ] || { echo "gpu_learning: no .whl/ folder; run 'bash benchmarks/gpu_learning.sh --prepare' first" >&2; exit 2; }
python3 -c "import torch; assert torch.cuda.is_available(), 'no GPU'" || { echo "gpu_learning: needs a GPU" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
OUT="${OUT:-outputs/gpu_learning}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

if [ "${1:-}" = "vault-hard" ]; then
    # issue 26's regime (benchmarks/results/regime_pilot.md: 10-14 rooms, elimination signs, unseen eval layouts,
    # 512 paired held-out episodes per point) with a 256x8 tiny model (about 5.5M parameters, 13x the CPU run's
    # 96x4) and 8 seeds x GRPO {base, aem}, 8 runs at a time. Prepared but never run: no GPU was lent to this
    # work, so the sizes are estimates (SFT at lr 5e-4: 1e-3 and up broke the larger CPU models in the pilot).
    # shellcheck disable=SC2086
    timeout 540 python3 benchmarks/learning.py --env vault --model tiny --tiny-size 256x8 --seeds 8 --losses grpo \
        --ablation-seeds 0 --steps 80 --eval-every 40 --eval-seed 0 --sft-steps 4800 --sft-learning-rate 5e-4 \
        --sft-noise 0.1 --learning-rate 5e-4 --eval-episodes 4 --max-turns 20 --env-kwargs \
        '{"rooms": [10, 14], "elimination": 0.25, "eval_layouts": "unseen", "num_eval_tasks": 128, "num_train_tasks": 1024}' \
        --jobs 8 --threads 2 --work-dir /tmp/learning --results-dir "$OUT" --results-name learning_vault_hard_gpu \
        ${LEARNING_ARGS:-} 2>&1 | tee "$OUT/log.txt"
    exit 0
fi

# 4 seeds x {grpo, gigpo} x {base, aem} = 16 runs, 4 at a time on the one GPU (small models leave it mostly idle)
# shellcheck disable=SC2086
timeout 500 python3 benchmarks/learning.py --env webshop --model tiny --tiny-size 256x4 --seeds 4 \
    --losses grpo gigpo --ablation-seeds 0 --steps 30 --eval-every 15 --sft-steps 400 --sft-noise 0.1 \
    --learning-rate 5e-4 --tasks-per-step 8 --eval-episodes 4 --jobs 4 --threads 2 --work-dir /tmp/learning \
    --results-dir "$OUT" ${LEARNING_ARGS:-} 2>&1 | tee "$OUT/log.txt"
