#!/usr/bin/env bash
# GPU smoke check: the commands users run, small, in bf16, on a GPU. At most ~8 minutes on one GPU.
# Prints one line per check (PASS/FAIL, seconds, where the log is) and exits non-zero if any check failed.
#
#   bench/gpu_smoke.sh [OUT_DIR]            (default runs/gpu-smoke; needs `make install` first)
#
# Checks: an RM on the RM backbone (MiniLM) and on the policy backbone (SmolLM2, LoRA); SFT and PPO of the
# policy (code reward); an `align strength` ensemble; the translation domain's reward model scoring on the
# GPU in bf16 (as PPO places it); with two or more GPUs, the RM again in 2 processes (DDP), whose steps must
# equal the 1-process run's. Each run must report precision bf16 in its summary.json.
# Never run on the CPU-only machines this project is tested on (it refuses without CUDA, unless
# ALIGN_SMOKE_ON_CPU=1, which runs the same commands slowly on the CPU to check the script itself).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/gpu-smoke}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" = 0 ] && [ "${ALIGN_SMOKE_ON_CPU:-0}" != 1 ]; then
    echo "gpu_smoke: no CUDA GPU visible to $PY: nothing checked" >&2
    exit 2
fi
PRECISION=bf16
FAILED=0

check() {  # check NAME COMMAND...: run it, log to OUT/NAME.log, one line of verdict
    local name=$1 started=$SECONDS
    shift
    if "$@" >"$OUT/$name.log" 2>&1; then
        printf 'PASS  %-28s %4ss\n' "$name" $((SECONDS - started))
    else
        printf 'FAIL  %-28s %4ss  (log: %s)\n' "$name" $((SECONDS - started)) "$OUT/$name.log"
        FAILED=1
    fi
}

bf16_summary() {  # bf16_summary RUN_DIR [KEY=VALUE...]: the run computed in bf16 and has the given figures
    "$PY" - "$@" <<'EOF'
import json, sys
summary = json.load(open(f"{sys.argv[1]}/summary.json"))
assert summary.get("precision") == "bf16", f"precision {summary.get('precision')!r}, expected bf16"
for pair in sys.argv[2:]:
    key, value = pair.split("=")
    assert str(summary[key]) == value, f"{key} = {summary[key]!r}, expected {value}"
EOF
}

align() { "$PY" -m align.cli "$@" progress=false precision=$PRECISION; }

RM_KEYS=(model=minilm domain=hh max_examples=512 max_length=192 batch_size=16 epochs=1 learning_rate=3e-5 save_steps=20)
check rm-minilm align rm "${RM_KEYS[@]}" output_dir="$OUT/rm-minilm"
check rm-minilm-summary bf16_summary "$OUT/rm-minilm" steps=32
check rm-smollm2-lora align rm model=smollm2-135m domain=hh max_examples=256 max_length=256 batch_size=8 \
    max_steps=16 learning_rate=1e-4 lora.enabled=true gradient_checkpointing=true output_dir="$OUT/rm-smollm2"
check rm-smollm2-summary bf16_summary "$OUT/rm-smollm2" steps=16
check sft-smollm2 align sft model=smollm2-135m domain=code max_examples=128 batch_size=8 max_steps=16 \
    output_dir="$OUT/sft"
check sft-summary bf16_summary "$OUT/sft" steps=16
check ppo-smollm2-code align ppo --config configs/code/ppo_cpu.yaml max_steps=3 eval_prompts=8 save_steps=2 \
    output_dir="$OUT/ppo"
check ppo-summary bf16_summary "$OUT/ppo" steps=3
check ppo-resume align ppo --config configs/code/ppo_cpu.yaml max_steps=4 eval_prompts=8 save_steps=2 \
    output_dir="$OUT/ppo" resume=true
check strength-minilm align strength model=minilm domain=hh max_examples=256 max_length=192 batch_size=16 \
    members=2 slice_accuracy=false output_dir="$OUT/strength"

check translation-reward-on-gpu "$PY" - "$OUT" <<'EOF'
import sys, torch
from align.models import load_reward_model
from align.registry import get_domain
from align.types import Placeable
out = sys.argv[1]
load_reward_model("minilm", num_heads=2, head_names=["overall", "faithfulness"]).save_pretrained(f"{out}/translation-rm")
domain = get_domain("translation", reward_model=f"{out}/translation-rm")
assert isinstance(domain, Placeable)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
domain.place(device, torch.bfloat16)
parameter = next(domain.reward_model.parameters())
assert parameter.device.type == device.type and parameter.dtype == torch.bfloat16, (parameter.device, parameter.dtype)
prompts = list(domain.prompts("test"))[:8]
outputs = domain.reward(prompts, [p.reference or "" for p in prompts])
assert len(outputs) == 8 and all(o.reward is not None for o in outputs)
EOF

if [ "$GPUS" -ge 2 ]; then
    check rm-minilm-2gpu "$PY" -m accelerate.commands.launch --multi_gpu --num_processes 2 --mixed_precision bf16 \
        -m align.cli rm "${RM_KEYS[@]}" batch_size=8 output_dir="$OUT/rm-minilm-2gpu" progress=false precision=bf16
    check rm-minilm-2gpu-summary bf16_summary "$OUT/rm-minilm-2gpu" steps=32 processes=2
else
    echo "SKIP  rm-minilm-2gpu                  (one GPU: the 2-process check needs two)"
fi
exit $FAILED
