#!/usr/bin/env bash
# One prepared run on a GPU machine: GPU tests, engine variants, the protocol benchmark.
# Results go to $OUT (default ./out). Usage: bash benchmarks/gpu_session.sh [step ...]
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
steps=${*:-info tests variants speed}
for step in $steps; do
  case $step in
    info) nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv | tee "$OUT/gpu.txt"
          python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt" ;;
    tests) timeout 70 python3 -m pytest -q -m gpu -p no:cacheprovider -s tests/engine/test_gpu.py tests/augment \
             2>&1 | tail -12 | tee "$OUT/gpu_tests.txt" ;;
    variants) timeout 110 python3 benchmarks/engine_variants.py --epochs 10 --profile "bf16 eager" 2>&1 \
                | tee "$OUT/variants.txt" ;;
    speed) timeout 110 python3 benchmarks/protocol_speed.py --json "$OUT/speed.json" 2>&1 | tee "$OUT/speed.txt" ;;
    speed-mixed) timeout 100 python3 benchmarks/protocol_speed.py --conv mixed --skip-loop \
                --json "$OUT/speed_mixed.json" 2>&1 | tee "$OUT/speed_mixed.txt" ;;
    demo) timeout 90 python3 -m ddrank demo --quick --no-progress --no-store 2>&1 | tail -16 | tee "$OUT/demo.txt" ;;
    nccl) python3 -m ddrank baseline herding --ipc 10 --out /tmp/herding.pt > /dev/null
          timeout 90 python3 -m torch.distributed.run --nproc_per_node=1 -m ddrank evaluate --images /tmp/herding.pt \
            --protocol digits --rounds 1 --no-store --no-progress --json "$OUT/nccl.json" 2>&1 | tee "$OUT/nccl.txt"
          python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('nccl run:', r['provenance']['device'], r['provenance']['hardware'], 'lrs', round(r['lrs_mean'], 4))" "$OUT/nccl.json" ;;
    *) echo "unknown step $step" ;;
  esac
done
