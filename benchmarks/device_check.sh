#!/usr/bin/env bash
# The checks a lent GPU machine runs, from the repository root, through the device tool's `run`:
#   tests      the GPU tests (Lightning on the GPU through train_runtime and through the pipeline's own
#              trainer, DDP on the GPU, Triton measurements) and the placement behaviour tests;
#   training   benchmarks/gpu_training.py: every primitive trained on the CPU and on the GPU, same data and seed;
#   placement  benchmarks/compiler_placement.py on this GPU (issue 11 item 4), the small sizes where the crossover is.
# Usage: bash benchmarks/device_check.sh [tests] [training] [placement]   (all three by default)
# On the lent H200 (2026-11-28) the three together needed more than one call's 10 minutes: its host trains on
# the CPU at about half this project's VMs' speed per process, and the Triton tests compile every configuration
# they time. Give each call one or two parts.
# The machine's image has PyTorch, Lightning, Triton, pandas, pytest; what aiprim needs beyond them for these
# parts travels as wheels in .whl/ (pymetis, xgboost-cpu; built for its Python 3.12; see RESULTS.md, "GPU").
# Each part has its own time limit, so one that hangs leaves the others their time. Results go to $OUT.
set -u
OUT=${OUT:-/tmp/aiprim-device}
mkdir -p "$OUT/placement"
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/run.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -V; nproc; lscpu | grep -m1 'Model name'
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
# aiprim's import package maps its sub-packages onto the top-level folders (pyproject's package-dir);
# without installing it, links inside this copy of the tree do the same.
for d in primitives flows registry configs; do ln -sfn "../$d" "aiprim/$d"; done
export PYTHONPATH="$PWD:/tmp/site"
python3 -c "import torch, lightning, triton, xgboost, pymetis, aiprim.primitives.compiler; print('torch', torch.__version__, 'lightning', lightning.__version__, 'triton', triton.__version__)" || exit 1
part() { local seconds=$1; shift; echo "=== $* (limit ${seconds}s) $(date +%T)"; timeout "$seconds" "$@"; echo "=== exit $? $(date +%T)"; }
for what in "${@:-tests training placement}"; do
  for name in $what; do
    case $name in
      tests) part 300 python3 -m pytest -v -p no:cacheprovider -o addopts="-ra --strict-markers --durations=0" \
               tests/unit/test_gpu_training.py tests/unit/test_compiler_gpu.py tests/unit/test_compiler_placement.py \
               tests/behavioural/test_compiler_placement_behaviour.py ;;
      training) part 400 python3 benchmarks/gpu_training.py --out "$OUT/gpu_training.json" ;;
      placement) part 400 python3 benchmarks/compiler_placement.py --dims 16,32,48,64,96,128 --shapes 30 --schedules 24 \
                   --seed 1 --out "$OUT/placement" ;;
      *) echo "device_check.sh: unknown part '$name' (tests, training, placement)"; exit 2 ;;
    esac
  done
done
