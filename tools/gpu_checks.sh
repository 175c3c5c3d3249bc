#!/usr/bin/env bash
# The GPU checks behind the README's GPU figures (issue 16), prepared to run in one go on a lent GPU machine:
#   bash tools/gpu_checks.sh OUT_DIR [PHASE ...]     PHASE: tests eager tasks compiled (default: all four, in order)
# Each phase writes its JSON records and log into OUT_DIR and is cut off by its own time limit, so a slow phase
# (compilation) cannot take the others' results with it. The limits add up to 700 s for `tests eager tasks` and 500 s
# for `compiled` (unmeasured: no GPU has run it yet), so within one 15-minute device budget run `eager tasks` first.
# The machine needs torch, torchvision and pytest; what else densevision imports comes from the wheels of
# `make gpu-wheels` (.gpu/whl, carried along), installed into /tmp.
set -u
out=${1:?usage: bash tools/gpu_checks.sh OUT_DIR [tests|eager|tasks|compiled ...]}
shift
phases=("${@:-tests eager tasks compiled}")
mkdir -p "$out"
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site \
        .gpu/whl/*.whl || exit
    export PYTHONPATH="/tmp/gpu-site:$PYTHONPATH"
fi
bench() {  # bench LIMIT_S NAME ARGS...: one benchmark call, its table in NAME.log and records in NAME.json
    local limit=$1 name=$2
    shift 2
    timeout "$limit" "$python" tools/benchmark.py "$@" --device cuda --json "$out/$name.json" 2>&1 | tee "$out/$name.log"
}
for phase in ${phases[*]}; do
    echo "== $phase ($(date -u +%T))"
    case $phase in
    tests)  # the memory-efficient kernels, the amp paths and the runner's switches on CUDA
        timeout 150 "$python" -m pytest -q -p no:cacheprovider -x tests/models/test_blocks.py tests/test_precision.py \
            tests/engine/test_acceleration.py 2>&1 | tail -n 25 | tee "$out/tests.log" ;;
    eager)  # DenseNet-121 batch 64: plain, memory-efficient, bf16, channels-last, torchvision; profiled
        bench 200 densenet121 densenet121-train --batch-size 64 --steps 10 --warmup 3 --profile 3 --only densevision \
            "densevision memory_efficient" "densevision bf16" "densevision bf16 channels_last" "densevision channels_last" \
            torchvision "torchvision memory_efficient" ;;
    tasks)  # DSOD300 batch 32 and FC-DenseNet103 batch 3 through their task's loss
        bench 150 dsod300 dsod300-train --batch-size 32 --steps 5 --warmup 2 --profile 2 --only dsod300 "dsod300 bf16" \
            "dsod300 bf16 channels_last" "dsod300 bf16 memory_efficient"
        bench 100 fcdensenet103 fcdensenet103-train --batch-size 3 --steps 10 --warmup 3 --profile 3 \
            --only fcdensenet103 "fcdensenet103 bf16" "fcdensenet103 bf16 channels_last"
        # the dsod300_voc.py recipe's batch: images/s = 128000 / ms/step
        bench 100 dsod300-b128 dsod300-train --batch-size 128 --steps 3 --warmup 2 \
            --only "dsod300 bf16 memory_efficient" "dsod300 bf16 channels_last" ;;
    compiled)  # torch.compile and CUDA graphs (compilation takes most of the time)
        bench 300 densenet121-compiled densenet121-train --batch-size 64 --steps 10 --warmup 3 --only \
            "densevision bf16 channels_last cuda-graphs" "densevision compile" "densevision memory_efficient compile"
        bench 200 dsod300-compiled dsod300-train --batch-size 32 --steps 5 --warmup 3 --only \
            "dsod300 bf16 channels_last compile" "dsod300 cuda-graphs" ;;
    *) echo "unknown phase $phase (tests, eager, tasks, compiled)" >&2; exit 2 ;;
    esac
done
