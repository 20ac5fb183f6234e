"""Composition root: the only clock reader; `run --once` and the long-running daemon."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from mailflow.cli.context import AppContext
from mailflow.clock import Clock
from mailflow.locks import instance_lock
from mailflow.logs import setup_logging
from mailflow.outbox import release_stale
from mailflow.service import run_once

log = logging.getLogger("mailflow.daemon")


def _clock(app_ctx: AppContext, *, frozen: bool) -> Clock:
    start = app_ctx.now() if app_ctx.now_text else None
    try:
        speed = float(os.environ.get("MAILFLOW_CLOCK_SPEED", "1") or 1)
    except ValueError:
        speed = 1.0
    return Clock(start, frozen=frozen, speed=max(1.0, speed))


def run_once_command(app_ctx: AppContext) -> int:
    settings = app_ctx.settings
    setup_logging(settings.logging.level, settings.logging.format)
    engine = app_ctx.engine()
    clock = _clock(app_ctx, frozen=True)
    with instance_lock(engine, settings):
        if settings.database.is_sqlite:
            release_stale(engine, clock.now(), all_sending=True)  # we are the only instance
        report = asyncio.run(run_once(engine, settings, clock.now))
    print(
        f"pass done: {report.lifecycle.pairs} pair(s) advanced, {sum(report.inbox.values())} message(s) read, "
        f"{report.digests} digest(s) queued, {report.sent.sent} email(s) sent, {report.sent.retried} deferred, "
        f"{report.sent.failed} failed"
    )
    if report.inbox_skipped:
        print(f"inbox not read: {report.inbox_skipped}")
    code = 0
    if report.inbox_error:
        print(f"inbox not read: {report.inbox_error}")
        code = 1
    if report.sent.paused:
        print(f"sending paused: {report.sent.paused}")
        code = 1
    return code


def run_daemon_command(app_ctx: AppContext) -> int:
    # a stop request during start-up (before the event loop installs its handlers) is a clean exit too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from mailflow.runner import run_daemon

    settings = app_ctx.settings
    setup_logging(settings.logging.level, settings.logging.format)
    return run_daemon(app_ctx.engine(), settings, _clock(app_ctx, frozen=False))
