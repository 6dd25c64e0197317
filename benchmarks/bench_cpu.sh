#!/usr/bin/env bash
# The full CPU benchmark: lite beside Hugging Face transformers on the bundled SmolLM2-135M-Instruct,
# written into docs/benchmarks.md (the section for this model, CPU and thread count is replaced).
# Extra arguments go to `lite bench`, e.g. `benchmarks/bench_cpu.sh --threads 4 --repeats 5`.
set -euo pipefail
cd "$(dirname "$0")/.."

LITE="${LITE:-.venv/bin/lite}"
[ -x "$LITE" ] || LITE=lite

# Both sides are timed on the same cores: anything else running skews them, and unevenly.
if [ -r /proc/loadavg ]; then
  load=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench_cpu.sh: warning: load average is $load; the machine is not quiet, timings will be noisy" >&2
  fi
fi

"$LITE" bench --output docs/benchmarks.md "$@"
