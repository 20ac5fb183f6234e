"""`mailflow people export|erase` and `mailflow purge`: answer a data-protection request, apply retention."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailflow.cli.context import ctx_of, fail, guarded, print_json

people_app = typer.Typer(
    help="Data-protection requests: export or erase what is held about a person.\n\nExample: mailflow people export zoe@example.net",
    no_args_is_help=True,
)


@people_app.command("export")
@guarded
def export(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The person's email address.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON to this file instead of stdout.")] = None,
) -> None:
    """Everything held about one person, as JSON (person, pairs with role, events, flags, emails, replies).

    Example: mailflow people export mentee@example.net --out export.json
    """
    from mailflow.privacy import export_person

    app_ctx = ctx_of(ctx)
    data = export_person(app_ctx.engine(), email, app_ctx.now())
    if out is None:
        print_json(data)
        return
    try:
        out.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        out.chmod(0o600)
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror})")
    typer.echo(f"export written to {out}")


@people_app.command("erase")
@guarded
def erase(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The person's email address.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person: anonymised in the database, their messages deleted from the managed mailbox folders.

    Irreversible. Pairs keep their states and events (statistics still work). A participant of an
    open pair is refused: close the pair first.

    Example: mailflow people erase mentee@example.net --yes
    """
    from mailflow.privacy import erase_person

    if not yes:
        if not sys.stdin.isatty():
            fail("erasing is irreversible: confirm with --yes")
        typer.confirm("Erase this person for good (database and mailbox)?", abort=True)
    app_ctx = ctx_of(ctx)
    report = erase_person(app_ctx.engine(), app_ctx.settings, email, app_ctx.now())
    typer.echo(
        f"person erased: {report.pairs} pair(s) kept anonymised, {report.inbound} inbound message(s) blanked, "
        f"{report.outbox} email(s) re-addressed, {report.mailbox_deleted} mailbox message(s) deleted"
    )


@guarded
def purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be removed; change nothing.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Apply the retention settings: erase people of pairs ended long ago, remove old inbound messages.

    Example: mailflow purge --dry-run
    """
    from mailflow.privacy import purge as run_purge

    app_ctx = ctx_of(ctx)
    report = run_purge(app_ctx.engine(), app_ctx.settings, app_ctx.now(), dry_run=dry_run)
    if json_:
        print_json({"dry_run": dry_run, "people_erased": report.people_erased, "messages_blanked": report.messages_blanked,
                    "mailbox_deleted": report.mailbox_deleted})  # fmt: skip
        return
    verb = "would be" if dry_run else "were"
    typer.echo(
        f"{report.people_erased} person(s) {verb} erased, {report.messages_blanked} inbound message(s) {verb} blanked"
        + ("" if dry_run else f", {report.mailbox_deleted} mailbox message(s) deleted")
    )


@people_app.command("set-email")
@guarded
def set_email(ctx: typer.Context, old: str, new: str) -> None:
    """Correct a person's address (e.g. after a bounce): their held mail goes out again to the new one.

    Example: mailflow people set-email zoe.martin@exemple.fr zoe.martin@example.fr
    """
    from email_validator import EmailNotValidError, validate_email
    from sqlmodel import select

    from mailflow.adapters.db import session_scope
    from mailflow.adapters.tables import Person
    from mailflow.people import correct_address

    try:
        new = validate_email(new, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        fail(f"{new!r} is not a valid email address ({exc})")
    app_ctx = ctx_of(ctx)
    with session_scope(app_ctx.engine()) as session:
        person = session.exec(select(Person).where(Person.email == old.strip().lower())).first()
        if person is None:
            fail("no person with that address (see `mailflow pairs list`)")
        if session.exec(select(Person).where(Person.email == new)).first() is not None:
            fail("another person already has the new address")
        released = correct_address(session, person, new, app_ctx.now())
    typer.echo(f"address corrected; {released} held email(s) will go out again")


def register(app: typer.Typer) -> None:
    app.add_typer(people_app, name="people")
    app.command("purge")(purge)
