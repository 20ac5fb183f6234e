"""Top-level commands (init, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailflow.cli.context import ctx_of, fail, guarded, print_json


@guarded
def init(ctx: typer.Context) -> None:
    """Create or migrate the database. Idempotent.

    Example: mailflow init
    """
    from mailflow.adapters.db import migrate

    revision = migrate(ctx_of(ctx).engine(check=False))
    typer.echo(f"database ready (schema {revision})")


@guarded
def parse(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The message (.eml, raw RFC 5322 bytes).")],
    json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Read one message offline (no database): reply, auto-reply, bounce or other; intent; visible text.

    Example: mailflow parse reply.eml --json
    """
    from mailflow.core.mail.parse import parse_message, parse_report
    from mailflow.subjects import kind_from_subject
    from mailflow.vocabulary import load_vocabulary

    try:
        raw = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror})")
    settings = ctx_of(ctx).settings
    replied = kind_from_subject(parse_message(raw).subject)
    report = parse_report(raw, load_vocabulary(settings.inbound.vocabulary_file), replied)
    if json_:
        print_json(report)
        return
    typer.echo(f"kind: {report['kind']}\nintent: {report['intent']}")
    if report["bounce"]:
        typer.echo(f"bounce: {'permanent' if report['bounce']['permanent'] else 'temporary'} {', '.join(report['bounce']['recipients'])}")
    typer.echo(f"text:\n{report['text']}")


def register(app: typer.Typer) -> None:
    from mailflow.cli.demo import demo

    app.command("init")(init)
    app.command("parse")(parse)
    app.command("demo")(demo)
