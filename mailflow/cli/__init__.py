"""The `mailflow` command line: load settings, open resources, call one function per command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from sqlalchemy.exc import OperationalError

from mailflow import __version__
from mailflow.cli.context import AppContext, fail
from mailflow.errors import MailflowError

app = typer.Typer(
    name="mailflow",
    help="mailflow runs the email side of a mentoring programme.\n\nExample: mailflow --config config/mailflow.toml run --once",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailflow {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", help="Config file (default: $MAILFLOW_CONFIG, else config/mailflow.toml if present)."),
    ] = None,  # noqa: UP045
    now: Annotated[
        Optional[str],
        typer.Option("--now", help="Fix the clock (ISO-8601; without offset: programme time zone). Also MAILFLOW_NOW."),
    ] = None,  # noqa: UP045
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = AppContext(config_path=config, now_text=now or os.environ.get("MAILFLOW_NOW") or None)


def _register() -> None:
    from mailflow.cli import commands, ops, pairs

    ops.register(app, pairs.app)
    app.add_typer(pairs.app, name="pairs")
    commands.register(app)
    from mailflow.cli import referents

    referents.register(app)
    from mailflow.cli import privacy

    privacy.register(app)


_register()


def main() -> None:
    try:
        app()
    except MailflowError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"database error: {exc.orig} (check database.url; run `mailflow init`)")
    except KeyboardInterrupt:
        sys.exit(130)
