"""The benchmarks as a reader runs them (``benchmarks/``, figures in ``benchmarks/RESULTS.md``).

Only what takes a second or two: the benchmarks themselves take minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from demixer.service.db import Database
from demixer.service.migrate import migrate
from demixer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/common.py, found through the path above)

# api_speed.py's BASELINE, the commit its *before* server runs (api_speed itself is not imported
# here: it needs psutil, one of the benchmarks' own requirements).
API_BASELINE = "970db2a"


def test_api_speed_baseline_starts_on_a_database_this_tree_made(tmp_path: Path) -> None:
    """api_speed.py runs its *before* server (an older commit's src) on the database this tree
    migrated: the old ``demixer migrate`` must accept it, or that server exits at start and the
    whole benchmark with it ("Can't locate revision identified by '0005'")."""
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{API_BASELINE}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if known.returncode != 0:
        pytest.skip(f"this clone does not have commit {API_BASELINE}")
    data = tmp_path / "data"
    migrate(Database(Settings(data_dir=data).database))
    src = common.baseline_src(API_BASELINE, cache=tmp_path / "cache")
    env = {**os.environ, "PYTHONPATH": str(src)}
    old = subprocess.run(
        [sys.executable, "-m", "demixer", "migrate", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert old.returncode == 0, old.stderr[-600:]
