#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) in two steps, for a session lent a device machine.
#
#   bash benchmarks/gpu_check.sh fetch     # here: the wheels the device lacks, into .whl/
#   bash benchmarks/gpu_check.sh run COMMIT [ARGS]  # there, from the repository root
#
# The device's image has Python 3.12 with CUDA torch, numpy, scipy, numba, einops and PyYAML,
# and no package index. "fetch" downloads what MSST's and demixer's imports need beyond that
# (about 40 MB, mostly PyAV) as cp312 wheels, and the 12 s excerpt the check loops to 30 s. The
# device call then carries both:
#
#   carry: [".whl", "benchmarks/.cache/falcon69-12s.wav"]
#   command: bash benchmarks/gpu_check.sh run <commit>
#
# It prints the table and leaves gpu_check.json in $OUT (a few minutes on one H200).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  msst==0.1.0 librosa==0.11.0 soundfile==0.14.0 omegaconf==2.4.0 ml_collections==1.1.0
  beartype==0.23.1 rotary-embedding-torch==0.9.1 pooch==1.9.0 platformdirs==4.14.9
  decorator==5.3.1 audioread==3.1.0 soxr==1.1.0 cffi==2.1.1 pycparser==3.12
  av==18.1.0 lameenc==1.9.0
)

case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d .whl "${WHEELS[@]}"
    .venv/bin/python -c 'import sys; sys.path.insert(0, "benchmarks"); import common
common.long_mix(12, "wav")'
    du -sh .whl benchmarks/.cache/falcon69-12s.wav
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    cd benchmarks
    exec python3 gpu_check.py --out "${OUT:-.cache}" --seconds 30 \
      --wav .cache/falcon69-12s.wav --commit "${2:-?}" "${@:3}"
    ;;
  *)
    echo "usage: $0 fetch | run COMMIT" >&2
    exit 2
    ;;
esac
