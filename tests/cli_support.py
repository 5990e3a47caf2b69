"""The ``demixer`` console script run in the test's own process, for the tests of refusals."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

from typer.testing import CliRunner


def demixer_here(
    *args: str | Path,
    model_dir: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``demixer ARGS`` through the console script's own ``main`` (its exit codes, its one-line
    errors and warnings on stderr), as ``test_cli.demixer`` runs it, but in this process: a
    process of its own cost seconds of start-up each (importing torch, loading the model),
    the most of the CLI tests' time. What a real process does at start and exit (signals, the
    locale's encoding, file names as bytes, ``serve``), and one separation end to end, stay
    with ``test_cli.demixer``."""
    from demixer.cli import main

    argv = ["demixer", *map(str, args)]
    env = {**(env or {}), "DEMIXER_MODEL_DIR": str(model_dir)}
    with (
        CliRunner().isolation(env=env) as (out, err, _),
        patch.object(sys, "argv", argv),
        contextlib.chdir(cwd or Path.cwd()),
    ):
        try:
            main()
            code = 0
        except SystemExit as end:
            code = end.code if isinstance(end.code, int) else int(end.code is not None)
        sys.stdout.flush()  # as a process's exit does: a bare write is still in the buffer
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(argv, code, stdout, stderr)
