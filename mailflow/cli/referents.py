"""Referents' and operators' views: digest preview, programme indicators, funders' export."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mailflow.cli.context import ctx_of, fail, guarded, print_json

digest_app = typer.Typer(help="The referents' daily digest.\n\nExample: mailflow digest preview --referent ines@example.org", no_args_is_help=True)
export_app = typer.Typer(help="Exports for reporting (no personal data).\n\nExample: mailflow export pairs --csv pairs.csv", no_args_is_help=True)


@digest_app.command("preview")
@guarded
def digest_preview(
    ctx: typer.Context,
    referent: Annotated[str, typer.Option("--referent", help="The referent's email address.")],
    html: Annotated[Path | None, typer.Option("--html", help="Also write the HTML body to this file.")] = None,
) -> None:
    """Show the digest a referent would get now (nothing is sent or recorded).

    Example: mailflow digest preview --referent sophie@example.org --html /tmp/digest.html
    """
    from mailflow.digest import digest_preview as preview

    app_ctx = ctx_of(ctx)
    rendered = preview(app_ctx.engine(), app_ctx.settings, referent, app_ctx.now())
    typer.echo(f"Subject: {rendered.subject}\n\n{rendered.text}")
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
        typer.echo(f"HTML written to {html}")


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: use YYYY-MM-DD")


@guarded
def stats(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    from_: Annotated[str | None, typer.Option("--from", help="First day counted (YYYY-MM-DD).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day counted (YYYY-MM-DD).")] = None,
) -> None:
    """The programme's indicators: pairs by state, first contact, follow-up response, calls, closures.

    Example: mailflow stats --json --from 2026-09-01 --to 2026-12-31
    """
    from mailflow.stats import compute_stats

    start, end = _date(from_, "--from"), _date(to, "--to")
    if start and end and start > end:
        fail("--from must not be after --to")
    app_ctx = ctx_of(ctx)
    data = compute_stats(app_ctx.engine(), start, end, app_ctx.settings.policy())
    if json_:
        print_json(data)
        return
    table = Table("indicator", "value")
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                table.add_row(f"{key}.{sub}", "" if v is None else str(v))
        else:
            table.add_row(key, str(value))
    Console().print(table)


@export_app.command("pairs")
@guarded
def export_pairs(ctx: typer.Context, csv_: Annotated[Path, typer.Option("--csv", help="The CSV file to write.")]) -> None:
    """One row per pair for funders' reporting: no names, addresses or phone numbers.

    Example: mailflow export pairs --csv /tmp/pairs.csv
    """
    from mailflow.export import export_pairs_csv

    app_ctx = ctx_of(ctx)
    try:
        count = export_pairs_csv(app_ctx.engine(), csv_, app_ctx.now())
    except OSError as exc:
        fail(f"{csv_}: cannot write ({exc.strerror})")
    typer.echo(f"{count} pair(s) written to {csv_}")


def register(app: typer.Typer) -> None:
    app.add_typer(digest_app, name="digest")
    app.command("stats")(stats)
    app.add_typer(export_app, name="export")
