"""Run the real `mailflow` CLI (a subprocess, as operators and acceptance checks do)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120) -> CliResult:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "mailflow", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
