#!/usr/bin/env bash
# One prepared run on a GPU machine. Results go to $OUT (default ./out).
# Usage: bash benchmarks/gpu_session.sh [step ...]
#
# The default steps fit in about 7 minutes of an H200 (each step has a timeout). The protocol
# workload runs first, on a machine that has compiled nothing yet (its first run pays Triton's
# compilation; --repeat 2 reruns it in the same process), then again in a new process (kernels
# cached on disk, as for every later run on a machine); then the fused kernel on the protocol's
# shapes, the GPU tests (the compiled kernel's correctness cases, fused-versus-eager accuracy,
# graphs versus eager, the GEMM first convolution), the soft-label workloads, and the protocol
# workload with the fused kernel off (the comparison, in the same session).
# Optional steps: speed-cl (channels-last activations), conv (each convolution's layouts and
# forms), profile (the CUDA kernels of a few epochs; PROFILE names the variant), compile
# (torch.compile of the step, compile time counted), reference (the test set scored every 100
# epochs, evaluations beside training), variants, speed-mixed, demo, nccl.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
steps=${*:-info speed speed-again kernel tests soft speed-eager}
for step in $steps; do
  echo "=== $step $(date -u +%FT%TZ)" | tee -a "$OUT/steps.txt"
  case $step in
    info) nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv | tee "$OUT/gpu.txt"
          python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
            | tee -a "$OUT/gpu.txt" ;;
    kernel) timeout 45 python3 benchmarks/fused_kernel.py 2>&1 | tee "$OUT/kernel.txt" ;;
    conv) timeout 60 python3 benchmarks/conv_probe.py 2>&1 | tee "$OUT/conv.txt" ;;
    tests) timeout 40 python3 -m pytest -q -p no:cacheprovider tests/engine/fused_cases.py > "$OUT/kernel_tests.txt" 2>&1
           tail -3 "$OUT/kernel_tests.txt"
           timeout 150 python3 -m pytest -q -p no:cacheprovider -rA -m "gpu and not slow" -s \
             tests/engine/test_gpu.py tests/augment > "$OUT/gpu_tests.txt" 2>&1
           grep -E "passed|failed|PASSED|FAILED|ERROR| ± " "$OUT/gpu_tests.txt" | tail -30 ;;
    speed) timeout 150 python3 benchmarks/protocol_speed.py --repeat 2 --json "$OUT/speed.json" 2>&1 | tee "$OUT/speed.txt" ;;
    speed-again) timeout 90 python3 benchmarks/protocol_speed.py --skip-loop --json "$OUT/speed_again.json" 2>&1 \
                   | tee "$OUT/speed_again.txt" ;;
    speed-cl) timeout 120 python3 benchmarks/protocol_speed.py --channels-last --skip-loop \
                --json "$OUT/speed_cl.json" 2>&1 | tee "$OUT/speed_cl.txt" ;;
    profile) timeout 100 python3 benchmarks/engine_variants.py --epochs 5 --warmup 3 \
               --only "bf16 eager" "bf16 eager, channels-last" --profile "${PROFILE:-bf16 eager}" 2>&1 \
               | tee "$OUT/profile.txt" ;;
    soft) timeout 75 python3 benchmarks/soft_label_speed.py --workload convnet --json "$OUT/soft_convnet.json" \
            2>&1 | tee "$OUT/soft.txt"
          timeout 75 python3 benchmarks/soft_label_speed.py --workload resnet18 --warmup 2 --epochs 2 \
            --json "$OUT/soft_resnet18.json" 2>&1 | tee -a "$OUT/soft.txt" ;;
    speed-eager) timeout 80 python3 benchmarks/protocol_speed.py --no-fused --skip-loop \
                   --json "$OUT/speed_eager.json" 2>&1 | tee "$OUT/speed_eager.txt" ;;
    compile) timeout 240 python3 benchmarks/protocol_speed.py --compile --skip-loop \
               --json "$OUT/speed_compile.json" 2>&1 | tee "$OUT/speed_compile.txt"
             timeout 120 python3 -m pytest -q -p no:cacheprovider -m "gpu and slow" -k compiled \
               tests/engine/test_gpu.py 2>&1 | tail -5 | tee -a "$OUT/speed_compile.txt" ;;
    reference) timeout 120 python3 benchmarks/protocol_speed.py --eval-every 100 --skip-loop \
                 --json "$OUT/speed_reference.json" 2>&1 | tee "$OUT/speed_reference.txt" ;;
    variants) timeout 110 python3 benchmarks/engine_variants.py --epochs 10 --profile "bf16 eager" 2>&1 \
                | tee "$OUT/variants.txt" ;;
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
echo "=== done $(date -u +%FT%TZ)" | tee -a "$OUT/steps.txt"
