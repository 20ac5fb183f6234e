"""Top-level commands (init, ...)."""

from __future__ import annotations

import typer

from mailflow.cli.context import ctx_of, guarded


@guarded
def init(ctx: typer.Context) -> None:
    """Create or migrate the database. Idempotent.

    Example: mailflow init
    """
    from mailflow.adapters.db import migrate

    revision = migrate(ctx_of(ctx).engine(check=False))
    typer.echo(f"database ready (schema {revision})")


def register(app: typer.Typer) -> None:
    from mailflow.cli.demo import demo

    app.command("init")(init)
    app.command("demo")(demo)
