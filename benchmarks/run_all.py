"""Run demixer's benchmarks and rewrite their sections of benchmarks/RESULTS.md (``make bench``).

1. installs benchmarks/requirements.txt into this venv if something is missing;
2. runs benchmarks/setup_peers.sh (the two peer venvs; a no-op once they exist);
3. runs quality.py, cascade_quality.py, speed.py, memory.py, service.py, scale.py and
   api_speed.py (``common.MAKE_BENCH``), each in its own process; each rewrites only its own
   section of RESULTS.md, so one failing leaves the others' figures. msst_speed.py,
   arch_speed.py, mdx_net.py, recipes.py and gpu_check.py are run by hand (each section says
   how).

scale.py and api_speed.py need PostgreSQL and the S3 server of ``make test-servers`` and
Debian's ``wrk``; ``make bench`` installs them.

    .venv/bin/python benchmarks/run_all.py [--only quality speed memory] [--quick]

``--quick`` is a smoke run (1 speed round on 30 s, memory on 1 and 2 minutes): its figures
are not the published ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

from common import MAKE_BENCH as PARTS

BENCH = Path(__file__).resolve().parent
QUICK = {
    "quality": [],
    "cascade_quality": [],
    "speed": ["--rounds", "1", "--seconds", "30"],
    "memory": ["--minutes", "1", "2", "--peer-minutes", "1"],
    "service": ["--rounds", "1", "--seconds", "30", "--load-seconds", "3", "--submit-seconds", "3"],
    "scale": ["--workers", "1", "2", "--jobs", "4", "--long-jobs", "2", "--load-seconds", "3"],
    "api_speed": ["--rounds", "1", "--seconds", "2", "--streams", "100", "--upload-rounds", "1"],
}


def ensure_requirements() -> None:
    missing = [
        m for m in ("museval", "psutil", "stempeg", "soxr", "av") if not importlib.util.find_spec(m)
    ]
    if missing:
        print(f"run_all: installing benchmarks/requirements.txt (missing: {', '.join(missing)})")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                str(BENCH / "requirements.txt"),
            ],
            check=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=PARTS, default=list(PARTS))
    ap.add_argument("--quick", action="store_true", help="smoke run with short inputs")
    ap.add_argument("--skip-setup", action="store_true", help="do not run setup_peers.sh")
    args = ap.parse_args()

    ensure_requirements()
    if not args.skip_setup:
        subprocess.run(["bash", str(BENCH / "setup_peers.sh")], check=True)
    failed = []
    for part in args.only:
        t = time.perf_counter()
        print(f"run_all: {part}", flush=True)
        cmd = [sys.executable, str(BENCH / f"{part}.py"), *(QUICK[part] if args.quick else [])]
        rc = subprocess.run(cmd).returncode
        print(f"run_all: {part} done in {time.perf_counter() - t:.0f} s (exit {rc})", flush=True)
        if rc != 0:
            failed.append(part)
    if failed:
        print(f"run_all: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"run_all: results in {BENCH / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
