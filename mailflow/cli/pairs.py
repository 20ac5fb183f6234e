"""`mailflow pairs ...`: import the roster, list and show pairs, operator decisions on a pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from mailflow.cli.context import ctx_of, fail, guarded, print_json

app = typer.Typer(help="Import, list and manage pairs.\n\nExample: mailflow pairs import config/example-pairs.csv", no_args_is_help=True)


@app.command("import")
@guarded
def import_(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="Roster CSV (comma or semicolon, UTF-8).")]) -> None:
    """Import pairs from the roster CSV. All or nothing; re-importing a pair_ref changes nothing.

    Example: mailflow pairs import config/example-pairs.csv
    """
    from mailflow.core.roster import RosterError, parse_roster
    from mailflow.importer import import_roster

    app_ctx = ctx_of(ctx)
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror})")
    try:
        rows = parse_roster(data)
        result = import_roster(app_ctx.engine(), rows, app_ctx.now())
    except RosterError as exc:
        for problem in exc.problems:
            typer.echo(f"{file}: {problem}", err=True)
        typer.echo(f"error: {len(exc.problems)} problem(s); nothing was imported", err=True)
        raise SystemExit(1) from None
    typer.echo(
        f"imported {result.created} new pair(s), {result.unchanged} already known"
        + (f", {result.corrected} address(es) corrected" if result.corrected else "")
    )


@app.command("list")
@guarded
def list_(
    ctx: typer.Context,
    json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
    state: Annotated[str | None, typer.Option(help="Only pairs in this state.")] = None,
    referent: Annotated[str | None, typer.Option(help="Only this referent's pairs (email).")] = None,
) -> None:
    """List pairs with their state and open flags.

    Example: mailflow pairs list --state active
    """
    from mailflow.queries import list_pairs

    with Session(ctx_of(ctx).engine()) as session:
        pairs = list_pairs(session, state=state, referent=referent)
    if json_:
        print_json([{k: p[k] for k in ("ref", "state", "flags", "matched_on", "last_reply_at")} for p in pairs])
        return
    table = Table("ref", "state", "mentor", "mentee", "referent", "matched on", "flags")
    for p in pairs:
        flags = ", ".join(f"{f['kind']}({f['who']})" if f["who"] else f["kind"] for f in p["flags"])
        table.add_row(
            p["ref"],
            p["state"],
            p["mentor"]["first_name"],
            p["mentee"]["first_name"],
            p["referent"]["name"],
            p["matched_on"],
            flags,
        )
    Console().print(table)
    typer.echo(f"{len(pairs)} pair(s)")


@app.command("show")
@guarded
def show(ctx: typer.Context, ref: str, json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Show one pair with its timeline of events.

    Example: mailflow pairs show P12 --json
    """
    from mailflow.queries import show_pair

    with Session(ctx_of(ctx).engine()) as session:
        pair = show_pair(session, ref)
    if json_:
        print_json(pair)
        return
    typer.echo(f"{pair['ref']}  {pair['state']}  matched on {pair['matched_on']}  track {pair['track']}")
    for role in ("mentor", "mentee"):
        person = pair[role]
        typer.echo(f"  {role}: {person['first_name']} {person['last_name']} <{person['email']}> {person['phone']}")
    typer.echo(f"  referent: {pair['referent']['name']} <{pair['referent']['email']}>")
    for flag in pair["flags"]:
        typer.echo(f"  flag {flag['kind']} who={flag['who']} reason={flag['reason']} since {flag['since']}")
    for event in pair["events"]:
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "kind"))
        typer.echo(f"  {event['at']}  {event['kind']}  {extra}")
