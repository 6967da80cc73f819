#!/usr/bin/env bash
# GPU check: tiny sft_shapes (SFT), tiny grpo_shapes (GRPO from that SFT model), the quickstart (the Generative RLHF-V
# flagship) with every stage cut short, the tiny GRPO-vs-TRL benchmark, on CUDA in bf16, and the vLLM rollout engine
# where it is installed or installable (tiny Qwen2-VL GRPO on the engine with its log-prob gap, Qwen2-VL tokens/s
# against HF generate, the engine's VLM tests); without vLLM and without network it says so and skips those.
# bash benchmarks/gpu_check.sh        (from a clone on a CUDA machine; needs PyPI only if .venv is absent; ~5 min on an H100)
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh machine: the repo's own environment from PyPI. PYTHON may name an interpreter that already
# has a CUDA torch (its packages stay visible); without network, point pip at a folder of wheels:
# PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels bash benchmarks/gpu_check.sh
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv --system-site-packages .venv
  .venv/bin/pip install -q --upgrade pip || true
  .venv/bin/pip install -q -e '.[dev]'
fi
. .venv/bin/activate
OUT="${OUT:-/tmp/rlhfv_gpu_check}"
rm -rf "$OUT" && mkdir -p "$OUT"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| bf16:", torch.cuda.is_bf16_supported())
PY
CUDA=(run.device=cuda run.dtype=bfloat16 run.resume=overwrite)

echo "== 1. sft_shapes, tiny variant (SFT of a tiny Qwen2-VL on ShapesVQA) =="
start=$SECONDS
rlhfv run recipes/sft_shapes.yaml "${CUDA[@]}" run.dir="$OUT/sft_shapes" run.save_every=0 \
  steps=150 train_data.size=2400 eval_data.size=100 eval_every=0 > "$OUT/sft_shapes.json"
cat "$OUT/sft_shapes.json"; echo "sft_shapes: $((SECONDS - start)) s"

echo "== 2. grpo_shapes, tiny variant (GRPO with the exact-answer reward from that SFT model) =="
start=$SECONDS
rlhfv run recipes/grpo_shapes.yaml --stages grpo "${CUDA[@]}" run.dir="$OUT/grpo_shapes" run.save_every=0 \
  stages.grpo.policy.path="$OUT/sft_shapes/final" stages.grpo.steps=30 stages.grpo.eval_data.size=100 \
  stages.grpo.eval_every=0 > "$OUT/grpo_shapes.json"
cat "$OUT/grpo_shapes.json"; echo "grpo_shapes: $((SECONDS - start)) s"

echo "== 3. quickstart (Generative RLHF-V: policy SFT, GRM SFT curriculum, GRM RL, policy RL), every stage cut short =="
start=$SECONDS
SHORT=()
for s in policy_sft grm_drill grm_warmup grm_sft grm_refine; do SHORT+=("stages.$s.steps=40"); done
rlhfv run recipes/quickstart.yaml "${CUDA[@]}" run.dir="$OUT/quickstart" run.save_every=0 "${SHORT[@]}" \
  stages.grm_rl.steps=4 stages.policy_rl.steps=4 stages.grm_refine.eval_data.pairs.size=50 \
  stages.grm_rl.eval_data.pairs.data.size=100 stages.policy_rl.eval_data.size=100 > "$OUT/quickstart.json"
echo "quickstart (short): $((SECONDS - start)) s"

echo "== 4. GRPO benchmark, tiny model, rlhfv vs TRL on CUDA bf16 =="
start=$SECONDS
python benchmarks/grpo_vs_trl.py --models tiny --device cuda --dtype bfloat16 --steps 5 --warmup 2 | tee "$OUT/bench.txt"
echo "benchmark: $((SECONDS - start)) s"

echo "== 5. vLLM rollout engine (its own environment: the vllm package) =="
# Installed when absent and PyPI answers (a few minutes); with neither, the engine steps are skipped.
if rlhfv engine path vllm >/dev/null; then
  VLLM=1
elif timeout 20 python -m pip download -q --no-deps --dest "$OUT/probe" six >/dev/null 2>&1 \
    && timeout 420 rlhfv engine install vllm --device gpu; then
  VLLM=1
else
  VLLM=0
  echo "vLLM is not installed and cannot be ($(rlhfv engine path vllm || true)); skipping the engine steps"
fi
if [ "$VLLM" = 1 ]; then
  echo "-- 5a. tiny grpo_shapes on the engine, from the SFT model of step 1 (rollout/logprob_gap per step) --"
  start=$SECONDS
  rlhfv run recipes/grpo_shapes.yaml --stages grpo "${CUDA[@]}" run.dir="$OUT/grpo_shapes_vllm" run.save_every=0 \
    stages.grpo.policy.path="$OUT/sft_shapes/final" stages.grpo.steps=10 stages.grpo.eval_data.size=100 \
    stages.grpo.eval_every=0 stages.grpo.rollout.engine=vllm > "$OUT/grpo_shapes_vllm.json"
  grep -o '"rollout/logprob_gap": [0-9.e-]*' "$OUT/grpo_shapes_vllm/grpo/metrics.jsonl" "$OUT/grpo_shapes_vllm/metrics.jsonl" 2>/dev/null | tail -5 || true
  echo "grpo_shapes on vLLM: $((SECONDS - start)) s"
  echo "-- 5b. Qwen2-VL images through the engine: gap before/after a sync, tokens/s against HF generate --"
  start=$SECONDS
  python benchmarks/vllm_vlm_check.py --out "$OUT/vllm_vlm" | tee "$OUT/vllm_vlm.txt"
  echo "vLLM VLM check: $((SECONDS - start)) s"
  echo "-- 5c. the engine's VLM tests (rollouts, sync proof, judge verdicts, GRPO) --"
  start=$SECONDS
  python -m pytest -q -p no:cacheprovider tests/engine/test_vllm_vlm.py | tail -3
  echo "vLLM tests: $((SECONDS - start)) s"
fi
