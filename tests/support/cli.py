"""Running ``runarchive`` in tests: in this process through ``main(argv)`` (fast), or as
a subprocess (:func:`run_cli`, for the few tests of the entry point itself)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runarchive.cli.main import main


@dataclass
class Done:
    """What a command did: its exit code and what it printed (like CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


def invoke(args: list[str], cwd: Path | None = None) -> Done:
    """``runarchive ARGS`` in this process (in ``cwd``), stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse: usage errors, --help, --version
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(here)
    return Done(code, out.getvalue(), err.getvalue())


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m runarchive.cli ARGS`` as a subprocess, without RUNARCHIVE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNARCHIVE_")}
    return subprocess.run(
        [sys.executable, "-m", "runarchive.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_ids(output: str) -> list[str]:
    """The run ids at the start of the lines of a table (demo, runs)."""
    return [
        line.split()[0] for line in output.splitlines() if line[:8].isdigit() and "T" in line[:16]
    ]
