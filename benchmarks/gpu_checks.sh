#!/usr/bin/env bash
# The GPU checks still open (issue 8), as one script for a lent GPU machine (about 6 minutes on an H100):
# MoCo v2's three split-BN computations profiled on the same machine, then the R50-224 benchmark table.
#   bash benchmarks/gpu_checks.sh OUT_DIR        (lightly: install its wheel first, see README "Speed")
# Each step has its own time limit; a step that runs over is skipped and the next one still runs.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
nvidia-smi -L
common=(--device cuda --precision bf16 --channels-last --config r50-224 --top 12 --out "$out")
for path in view one-call per-group; do  # ~30-60 s each: cuDNN autotuning, 5 warm-up + 5 timed + 5 profiled steps
  timeout 120 python3 benchmarks/profile_step.py moco-v2 "${common[@]}" --split-bn "$path" --label "$path" 2>&1 | grep -v Warn
done
timeout 90 python3 benchmarks/profile_step.py moco-v2 "${common[@]}" --set params.bn_splits=1 --label bn1 2>&1 | grep -v Warn
timeout 300 python3 benchmarks/train_step.py --device cuda --precision bf16 --channels-last --configs r50-224 --out "$out"
