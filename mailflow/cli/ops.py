"""Operator commands: run, calls, outbox, templates, pair decisions."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from mailflow.cli.context import ctx_of, fail, guarded, print_json
from mailflow.core.model import EmailKind, Role

calls_app = typer.Typer(help="Phone calls the team has to make.\n\nExample: mailflow calls list", no_args_is_help=True)
outbox_app = typer.Typer(help="Outgoing emails: list and retry.\n\nExample: mailflow outbox list --state failed", no_args_is_help=True)
templates_app = typer.Typer(help="Email templates: check and preview.\n\nExample: mailflow templates check", no_args_is_help=True)


@guarded
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One full pass (inbox, lifecycle, digests, outbox), then exit.")] = False,
) -> None:
    """Run the service: the daemon, or one pass with --once.

    Example: mailflow run --once
    """
    app_ctx = ctx_of(ctx)
    if once:
        from mailflow.daemon import run_once_command

        raise SystemExit(run_once_command(app_ctx))
    from mailflow.daemon import run_daemon_command

    raise SystemExit(run_daemon_command(app_ctx))


@guarded
def status(ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """The daemon's health: last inbox read, outbox backlog, failed sends, flags, leader. Exit 1 when unhealthy.

    Example: mailflow status --json
    """
    from mailflow.health import status as read_status

    app_ctx = ctx_of(ctx)
    report, healthy = read_status(app_ctx.engine(), app_ctx.settings, app_ctx.now())
    if json_:
        print_json({**report, "healthy": healthy})
    else:
        for key, value in report.items():
            typer.echo(f"{key}: {value}")
        typer.echo("healthy" if healthy else "UNHEALTHY")
    raise SystemExit(0 if healthy else 1)


@guarded
def simulate(
    ctx: typer.Context,
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="How many days to play.")] = 200,
    from_: Annotated[str | None, typer.Option("--from", help="Start date/time (default: now).")] = None,
    replies: Annotated[Path | None, typer.Option("--replies", help='JSON lines {"at", "ref", "who", "intent"} to play.')] = None,
    json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Play the calendar on a copy of the data with a virtual clock; nothing is sent.

    Example: mailflow simulate --days 200 --from 2026-09-01
    """
    from mailflow.clock import parse_now
    from mailflow.simulate import read_replies
    from mailflow.simulate import simulate as play

    app_ctx = ctx_of(ctx)
    settings = app_ctx.settings
    start = parse_now(from_, settings.tz) if from_ else app_ctx.now()
    scripted = read_replies(replies, settings) if replies else []
    timeline = play(app_ctx.engine(), settings, start, days, scripted)
    if json_:
        print_json(timeline)
        return
    for ref, lines in timeline.items():
        typer.echo(ref)
        for line in lines:
            typer.echo(f"  {line}")


@calls_app.command("list")
@guarded
def calls_list(ctx: typer.Context, json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Who to call, why, and the number.

    Example: mailflow calls list --json
    """
    from mailflow.queries import list_calls

    calls = list_calls(ctx_of(ctx).engine())
    if json_:
        print_json([{k: c[k] for k in ("ref", "who", "reason", "phone")} for c in calls])
        return
    table = Table("ref", "who", "name", "phone", "reason", "since", "attempt")
    for c in calls:
        table.add_row(c["ref"], c["who"], c["name"], c["phone"], c["reason"], c["since"][:10], str(c["attempt"]))
    Console().print(table)


@calls_app.command("done")
@guarded
def calls_done(
    ctx: typer.Context,
    ref: str,
    who: Annotated[Role, typer.Option("--who", help="mentor or mentee.")],
    note: Annotated[str, typer.Option("--note", help="What the call gave.")] = "",
) -> None:
    """Record a call as made; it clears the call flag.

    Example: mailflow calls done P12 --who mentee --note "joint, tout va bien"
    """
    from mailflow.operator import call_done

    if who is Role.REFERENT:
        fail("--who is mentor or mentee")
    app_ctx = ctx_of(ctx)
    call_done(app_ctx.engine(), app_ctx.settings, ref, who, note, app_ctx.now())
    typer.echo(f"call to the {who.value} of {ref} recorded")


@outbox_app.command("list")
@guarded
def outbox_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="pending, sending, sent, failed or held.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """List outgoing emails.

    Example: mailflow outbox list --state failed
    """
    from mailflow.outbox import outbox_rows

    with Session(ctx_of(ctx).engine()) as session:
        rows = outbox_rows(session, state)
        pairs = {r.pair_id for r in rows}
        from mailflow.adapters.tables import Pair

        refs = {p.id: p.ref for p in (session.get(Pair, i) for i in pairs if i) if p}
    data = [
        {"id": r.id, "ref": refs.get(r.pair_id or 0), "kind": r.kind, "to": r.role, "slot": r.slot, "state": r.state,
         "attempts": r.attempts, "message_id": r.message_id, "created_at": r.created_at.isoformat(),
         "sent_at": r.sent_at.isoformat() if r.sent_at else None, "error": r.last_error}
        for r in rows
    ]  # fmt: skip
    if json_:
        print_json(data)
        return
    table = Table("id", "ref", "kind", "to", "state", "attempts", "created", "error")
    for d in data:
        table.add_row(str(d["id"]), d["ref"] or "", d["kind"], d["to"], d["state"], str(d["attempts"]), d["created_at"][:16], d["error"])
    Console().print(table)


@outbox_app.command("retry")
@guarded
def outbox_retry(ctx: typer.Context, id: int) -> None:  # noqa: A002
    """Send a failed or held email again (same Message-ID).

    Example: mailflow outbox retry 42
    """
    from mailflow.outbox import retry_row

    app_ctx = ctx_of(ctx)
    retry_row(app_ctx.engine(), id, app_ctx.now())
    typer.echo(f"outbox message {id} queued again")


@templates_app.command("check")
@guarded
def templates_check(ctx: typer.Context) -> None:
    """Render every kind in French and English for a sample pair; exit 1 on any problem.

    Example: mailflow templates check
    """
    from mailflow.render import Renderer, check_templates

    problems = check_templates(Renderer(timezone_name=ctx_of(ctx).settings.calendar.timezone))
    for p in problems:
        typer.echo(f"problem: {p}", err=True)
    if problems:
        raise SystemExit(1)
    typer.echo(f"all {len(EmailKind)} kinds render in fr and en (text and HTML)")


@templates_app.command("preview")
@guarded
def templates_preview(
    ctx: typer.Context,
    kind: EmailKind,
    lang: Annotated[str, typer.Option("--lang", help="fr or en.")] = "fr",
    role: Annotated[Role | None, typer.Option("--role", help="Recipient role (default: the kind's first).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the HTML body to this file.")] = None,
) -> None:
    """Print a kind's subject and text for a sample pair.

    Example: mailflow templates preview followup --lang en --html /tmp/followup.html
    """
    from mailflow.render import KIND_ROLES, Renderer, sample_context

    target = role or KIND_ROLES[kind][0]
    rendered = Renderer(timezone_name=ctx_of(ctx).settings.calendar.timezone).render(kind, lang, sample_context(kind, lang, target))
    typer.echo(f"Subject: {rendered.subject}\n\n{rendered.text}")
    if html is not None:
        html.write_text(rendered.html, encoding="utf-8")
        typer.echo(f"HTML written to {html}")


def register(app: typer.Typer, pairs_app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("status")(status)
    app.command("simulate")(simulate)
    app.add_typer(calls_app, name="calls")
    app.add_typer(outbox_app, name="outbox")
    app.add_typer(templates_app, name="templates")

    @pairs_app.command("close")
    @guarded
    def close(ctx: typer.Context, ref: str) -> None:
        """The referent confirms the closure: closure emails go to both.

        Example: mailflow pairs close P7
        """
        from mailflow.operator import close_pair

        app_ctx = ctx_of(ctx)
        state = close_pair(app_ctx.engine(), app_ctx.settings, ref, app_ctx.now())
        typer.echo(f"{ref} {state}; closure emails queued")

    @pairs_app.command("pause")
    @guarded
    def pause(ctx: typer.Context, ref: str, until: Annotated[str, typer.Option("--until", help="YYYY-MM-DD")]) -> None:
        """Pause a pair's emails and call flags until a date (e.g. summer).

        Example: mailflow pairs pause P3 --until 2027-09-01
        """
        from mailflow.operator import pause_pair

        try:
            day = date.fromisoformat(until)
        except ValueError:
            fail(f"--until {until!r}: use YYYY-MM-DD")
        app_ctx = ctx_of(ctx)
        pause_pair(app_ctx.engine(), app_ctx.settings, ref, day, app_ctx.now())
        typer.echo(f"{ref} paused until {day.isoformat()}")

    @pairs_app.command("resume")
    @guarded
    def resume(ctx: typer.Context, ref: str) -> None:
        """End a pause now.

        Example: mailflow pairs resume P3
        """
        from mailflow.operator import resume_pair

        app_ctx = ctx_of(ctx)
        resume_pair(app_ctx.engine(), app_ctx.settings, ref, app_ctx.now())
        typer.echo(f"{ref} resumed")

    @pairs_app.command("reassign")
    @guarded
    def reassign(ctx: typer.Context, ref: str, referent: Annotated[str, typer.Option("--referent", help="The new referent's email.")]) -> None:
        """Give a pair to another referent.

        Example: mailflow pairs reassign P3 --referent marc@example.org
        """
        from mailflow.operator import reassign_pair

        app_ctx = ctx_of(ctx)
        reassign_pair(app_ctx.engine(), app_ctx.settings, ref, referent, app_ctx.now())
        typer.echo(f"{ref} now followed by {referent}")
