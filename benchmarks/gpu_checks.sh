#!/usr/bin/env bash
# The GPU checks of "speed a user feels", as one script for a lent GPU machine (1 GPU, 16 cores), within 8 minutes:
#   1. benchmarks/pipeline.py at ResNet-50 224 px on a generated JPEG image folder: ours (the FFCV loader when
#      ffcv is installed there, else the torchvision loader: the JSON records which) against lightly's pipeline,
#      precision auto (bf16 on a GPU with native bf16), loader workers on 14 cores, whole training steps;
#   2. benchmarks/learning.py --scale small: every method at once, one process each (plus one for the random-init
#      baselines), 1 torch thread and 1 loader worker per process, so the pretrainings share the 16 cores and the GPU.
# Never a test. Usage:
#   bash benchmarks/gpu_checks.sh OUT_DIR
# Writes four files (a lent machine returns at most 8): OUT_DIR/pipeline-cuda-auto-r50-224.json and pipeline.log,
# OUT_DIR/learning_small.json (the methods that finished in time) and learning.log; per-process files stay in
# /tmp/cssl-gpu-checks.
# The machine is bare: python3 with torch is there, lightly and ffcv are not. lightly is pure Python (its needs,
# pytorch-lightning among them, are there): carry its wheel, e.g. here
#   pip download --no-deps lightly==1.6.0 -d .whl
# and this script installs .whl/*.whl into /tmp/site. Without lightly, step 1 measures ours only.
# Sizes and limits can be changed from the environment (names below); each step has its own time limit, writes
# its JSON as it goes, and a step that runs over is cut and the next one still runs.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR}
mkdir -p "$out"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-470}                          # seconds for the whole script (the check's limit is 8 minutes)
PIPE_S=${PIPE_S:-190}                          # step 1's limit
PIPE_METHODS=${PIPE_METHODS:-simclr,moco-v2}
BACKBONE=${BACKBONE:-resnet50}
SIZE=${SIZE:-224}
BATCH=${BATCH:-128}
IMAGES=${IMAGES:-3072}                         # >= (warm-up + steps) x batch: the timed steps stay in one epoch
WORKERS=${WORKERS:-14}
LEARN_SCALE=${LEARN_SCALE:-small}
LEARN_METHODS=${LEARN_METHODS:-simclr,moco-v1,moco-v2,byol,swav,simsiam,simsiam-optimal,looc,looc++,moco-rot,moco-rot-same}
LEARN_SETS=${LEARN_SETS:-}                     # extra --set KEY=VALUE for every pretraining (e.g. train.epochs=10)
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/cssl_bench/numba}
start=$SECONDS
left() { echo $((BUDGET - (SECONDS - start))); }

if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import lightly" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi -L
nproc
"$PY" - <<'PY'
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
for m in ("lightly", "ffcv", "numba"):
    print(m, "installed" if importlib.util.find_spec(m) else "MISSING")
PY
loader=torchvision
if "$PY" -c "import ffcv, numba" 2>/dev/null; then loader=ffcv; fi
echo "our loader for step 1: $loader"

# 1. whole training steps against lightly, ResNet-50 at 224 px (~1 min to write the JPEG folder, then ~40 s a
#    method and round). The JSON is written after each method.
timeout "$PIPE_S" "$PY" benchmarks/pipeline.py --scale small --methods "$PIPE_METHODS" \
  --jpeg-folder /tmp/cssl-jpeg --images "$IMAGES" --backbone "$BACKBONE" --image-size "$SIZE" --batch "$BATCH" \
  --workers "$WORKERS" --threads 2 --precision auto --loader "$loader" --warmup 4 --steps 12 --rounds 2 \
  --breakdown-steps 4 --json "$out/pipeline-cuda-auto-r50-224.json" 2>&1 | grep -v "round " | tee "$out/pipeline.log"
echo "step 1 done at $((SECONDS - start)) s"

# 2. the learning benchmark's small scale, one process per method and one for the baselines, all at once
limit=$(($(left) - 20))
if [ "$limit" -lt 60 ]; then
  echo "step 2 skipped: ${limit} s left"
  exit 0
fi
sets=(--set data.workers=1)
if [ "$loader" = ffcv ]; then sets+=(--set data.loader=ffcv); fi
for s in $LEARN_SETS; do sets+=(--set "$s"); done
if [ "$loader" = ffcv ]; then  # write the .beton and compile the kernels once, not in every process at once
  LEARN_SCALE=$LEARN_SCALE LEARN_SETS=$LEARN_SETS timeout 90 "$PY" -c "
import os
from cssl_bench.config import load_recipe
from cssl_bench.data.datasets import get_source
from cssl_bench.data.sources import DatasetOptions
from cssl_bench.data.train_loader import make_train_loader
from cssl_bench.data.views import build_view_recipe
r = load_recipe('simclr', os.environ['LEARN_SCALE'], {'data': {'loader': 'ffcv'}}, os.environ['LEARN_SETS'].split())
src = get_source(r.data.dataset, 'train', DatasetOptions.from_recipe(r.data))
next(iter(make_train_loader(r, src, build_view_recipe(r), 0)))
print('ffcv ready')"
  limit=$(($(left) - 20))
fi
work=/tmp/cssl-gpu-checks
rm -rf "$work" && mkdir -p "$work"
pids=()
for m in ${LEARN_METHODS//,/ }; do
  OMP_NUM_THREADS=1 timeout "$limit" "$PY" benchmarks/learning.py --scale "$LEARN_SCALE" --methods "$m" --seeds 1 \
    --no-baseline --runs /tmp/cssl-learning --json "$work/$m.json" "${sets[@]}" >"$work/$m.log" 2>&1 &
  pids+=($!)
done
OMP_NUM_THREADS=1 timeout "$limit" "$PY" benchmarks/learning.py --scale "$LEARN_SCALE" --methods simclr --seeds 1 \
  --baseline-only --runs /tmp/cssl-learning --json "$work/baselines.json" "${sets[@]}" >"$work/baselines.log" 2>&1 &
pids+=($!)
echo "step 2: ${#pids[@]} processes, limit ${limit} s"
wait "${pids[@]}"
for f in "$work"/*.log; do echo "== $f"; tail -n 20 "$f"; done >"$out/learning.log"
"$PY" - "$out" "$work" "$LEARN_SCALE" "$LEARN_METHODS" "$LEARN_SETS" <<'PY'
import json, sys
from pathlib import Path

out, work, scale, methods, sets = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), sys.argv[5]
merged = {"scale": scale, "seeds": [0], "sets": sets.split(), "processes": "one per method, at once", "methods": {}}
for m in methods + ["baselines"]:
    f = work / f"{m}.json"
    if not f.is_file():
        merged.setdefault("not_finished", []).append(m)
        continue
    d = json.loads(f.read_text())
    merged["machine"] = d.get("machine")
    merged["baselines"] = d.get("baselines") or merged.get("baselines", {})
    merged["methods"].update(d.get("methods", {}))
(out / "learning_small.json").write_text(json.dumps(merged, indent=1))
for k, e in merged["methods"].items():
    print(f"{k:16s} kNN {e['knn']['mean']:6.2f} linear {e['linear']['mean']:6.2f} img/s {e['images_per_s']} min {e['minutes']}")
print("not finished:", ", ".join(merged.get("not_finished", [])) or "none")
PY
echo "all done at $((SECONDS - start)) s"
