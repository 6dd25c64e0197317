#!/usr/bin/env bash
# Everything the CUDA backend needs checked on a lent GPU, in one call: the GPU tests, then the
# CUDA benchmark (docs/benchmarks.md section + raw JSON). Logs go under $OUT when it is set.
# Extra arguments go to benchmarks/bench_cuda.py, e.g. `--layers 4` for a quick try.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/lite-cuda-checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, '| triton', triton.__version__, '| transformers', transformers.__version__)"
timeout "${TESTS_TIMEOUT:-360}" python3 -m pytest -q -s -p no:cacheprovider -rs --durations=8 tests/gpu 2>&1 | tee "$OUT/tests.log"
tests=$?
timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/bench_cuda.py --output docs/benchmarks.md --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
bench=$?
if [ -n "${PROFILE:-}" ]; then
  timeout "${PROFILE_TIMEOUT:-200}" python3 benchmarks/profile_decode.py ${PROFILE_ARGS:---batch 1 64} 2>&1 | tee "$OUT/profile.log"
fi
cp docs/benchmarks.md "$OUT/benchmarks.md"
echo "== tests exit $tests, bench exit $bench"
grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
