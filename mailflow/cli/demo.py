"""`mailflow demo`: the first five minutes on a machine with no mail server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailflow.cli.context import guarded


@guarded
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the sandbox (database, emails, index.html).")] = Path("demo-output"),
) -> None:
    """Play a programme on a sandbox: SQLite, the example roster, a local SMTP sink and inbox.

    Example: mailflow demo --out /tmp/demo
    """
    from mailflow.demo import run_demo

    run_demo(out)
