#!/usr/bin/env bash
# The quickstart recipe (configs/quickstart.yaml) as plain CLI commands, for machines without `cai run`.
#   bash scripts/quickstart_manual.sh [CONSTITUTION] [OUT]        # default: harmless out/quickstart
# 1. RLCD pairs from the constitution's framings (harmful prompts: refusal vs compliance; benign
#    prompts: answer vs needless refusal)   2. SFT on the positive answers (context distillation)
# 3. DPO on the same pairs from the SFT model (DPO=0 skips it)   4. values on the held-out prompts of data/eval/.
# plain_language: PROMPTS=data/helpful.jsonl BENIGN= bash scripts/quickstart_manual.sh plain_language out/plain
set -euo pipefail
C=${1:-harmless}
OUT=${2:-out/quickstart}
PY=${PY:-.venv/bin/python}
export CAI_VLLM_CPU_MEM=${CAI_VLLM_CPU_MEM:-0.06} VLLM_ENABLE_V1_MULTIPROCESSING=0
ENGINE_ARGS=(--engine-arg kv_cache_memory_bytes=536870912 --engine-arg enforce_eager=true --max-model-len 1024)
PROMPTS=${PROMPTS:-data/red_team.jsonl}
BENIGN=${BENIGN-data/helpful.jsonl}
SECONDS=0
"$PY" -m cai.cli contrast --constitution "$C" --prompts "$PROMPTS" --benign "$BENIGN" --limit ${LIMIT:-79} --benign-limit ${BENIGN_LIMIT:-0} \
    --max-tokens 96 --out "$OUT/contrast" "${ENGINE_ARGS[@]}"
"$PY" -m cai.cli train sft --config configs/sft.yaml data.path="$OUT/contrast" data.eval_fraction=0 \
    data.max_length=256 run.output_dir="$OUT/sft" run.epochs=2 run.batch_size=8 run.micro_batch_size=8 \
    run.save_every=0 optim.lr=${SFT_LR:-5e-5} optim.warmup_steps=2
MODEL="$OUT/sft"
if [ "${DPO:-1}" = 1 ]; then
  "$PY" -m cai.cli train dpo --config configs/dpo.yaml model="$OUT/sft" data.path="$OUT/contrast" \
      data.eval_fraction=0 data.max_length=160 run.output_dir="$OUT/dpo" run.epochs=${DPO_EPOCHS:-2} \
      run.batch_size=8 run.micro_batch_size=8 run.save_every=0 run.eval_every=0 optim.lr=${DPO_LR:-2e-5} \
      optim.warmup_steps=2 optim.scheduler=linear beta=${DPO_BETA:-0.1}
  MODEL="$OUT/dpo"
fi
"$PY" -m cai.cli eval values --model "$MODEL" --baseline smollm2-135m --constitution "$C" \
    --out "$OUT/values" --max-tokens ${EVAL_TOKENS:-128} "${ENGINE_ARGS[@]}"
echo "quickstart_manual: $SECONDS s" >&2
