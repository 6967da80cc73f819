#!/usr/bin/env bash
# The ADOPS figures measured on a lent 16-core GPU machine: throughput against stable-baselines3 on a
# quiet CPU (environments in-process, then in subprocesses), the full MiniGrid comparison (12 runs at a
# time) and Montezuma's Revenge on CUDA.
# Needs the wheels in .whl/ (gymnasium, farama-notifications, minigrid, pygame-ce, ale-py, omegaconf,
# stable-baselines3, for Python 3.12). Run from the repository root: bash benchmarks/adops_device.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TQDM_DISABLE=1
OUT=${OUT:-/tmp/adops_out}
mkdir -p "$OUT"
{ date -u; nproc; nvidia-smi -L; lscpu | grep "Model name"; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } 2>&1 | tee "$OUT/machine.txt"
timeout ${T_BENCH:-150} python3 benchmarks/adops_throughput.py --steps ${BENCH_STEPS:-12288} --repeats 3 2>&1 | tail -n 26 | tee "$OUT/throughput.txt"
[ -z "$SKIP_SUBPROC" ] && timeout 100 python3 benchmarks/adops_throughput.py --steps 12288 --repeats 3 --subproc 2>&1 | tail -n 26 | tee "$OUT/throughput_subproc.txt"
timeout ${T_MZ:-200} python3 -m rlhfv.cli run recipes/adops_montezuma.yaml num_envs=16 total_steps=16384 \
  run.dir=/tmp/mz > "$OUT/montezuma.log" 2>&1 &
timeout ${T_CMP:-220} python3 -m rlhfv.cli run recipes/adops_minigrid.yaml workers=${WORKERS:-12} run.device=cpu run.dir=/tmp/cmp \
  > "$OUT/compare.log" 2>&1
wait
cp /tmp/cmp/results.md /tmp/cmp/returns.png "$OUT/"
tar czf "$OUT/compare_metrics.tgz" -C /tmp/cmp --exclude='step_*' .
tail -n 2 /tmp/mz/metrics.jsonl >> "$OUT/montezuma.log"; cat /tmp/mz/summary.json >> "$OUT/montezuma.log"
tail -n 5 "$OUT/montezuma.log" | cut -c1-600; tail -n 5 "$OUT/compare.log"; cat "$OUT/results.md"
