#!/usr/bin/env bash
# One command for a lent GPU machine: set-up, CUDA tests, timings, then training until the time budget
# runs out (benchmarks/gpu_session.py does the work; benchmarks/README.md, "GPU session", says how to call it).
# Usage: benchmarks/gpu_session.sh [--dry-run] [--minutes M] [--out DIR] [--skip PHASE ...]
#        benchmarks/gpu_session.sh --pack-wheels | --anatomy-cache | --travel-size   (preparing a call, here)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$repo/SHMoARegExtension${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$python" "$repo/benchmarks/gpu_session.py" "$@"
