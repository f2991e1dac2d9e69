#!/usr/bin/env bash
# Download into .whl/ the wheels that a lent GPU machine lacks (it reaches no registry), then print the
# size of what a device call will carry. Run it here, where pip reaches PyPI, before benchmarks/gpu_session.sh.
# Usage: benchmarks/gpu_wheels.sh   (PY_VERSION: the GPU machine's Python, default 3.12; PYTHON: the pip to use)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python=python3
"$python" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
  --python-version "${PY_VERSION:-3.12}" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
  -d "$repo/.whl" "SimpleITK==2.5.*" "PyYAML>=6" "psutil>=5.9"
ls -l "$repo/.whl"
du -sh "$repo/.whl"
PYTHONPATH="$repo/SHMoARegExtension${PYTHONPATH:+:$PYTHONPATH}" "$python" "$repo/benchmarks/gpu_session.py" --travel-size
