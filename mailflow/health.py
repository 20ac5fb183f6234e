"""Liveness facts in the database: instance heartbeats, the leader, the last inbox read -> `mailflow status`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import Flag, OutboxMessage, ServiceState
from mailflow.config import Settings

STALE_HEARTBEAT = timedelta(seconds=60)


def wall_now() -> datetime:
    """Liveness is measured in real time, whatever --now says (the daemon's clock may start in the past)."""
    return datetime.now(UTC)


def heartbeat(engine: Engine, owner: str, leader: bool) -> None:
    now = wall_now()
    with session_scope(engine) as session:
        key = f"instance:{owner}"[:64]
        row = session.get(ServiceState, key) or ServiceState(key=key, updated_at=now)
        row.value, row.updated_at = json.dumps({"leader": leader}), now
        session.add(row)


def status(engine: Engine, settings: Settings, now: datetime) -> tuple[dict[str, Any], bool]:
    """The daemon's health as data, and whether it is healthy."""
    with Session(engine) as session:
        states = {r.key: r for r in session.exec(select(ServiceState))}
        pending = session.exec(
            select(func.count(), func.min(OutboxMessage.not_before)).where(col(OutboxMessage.state).in_(("pending", "sending")))
        ).one()
        failed = session.exec(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "failed")).one()
        held = session.exec(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "held")).one()
        flags = session.exec(select(Flag.kind, func.count()).where(Flag.is_open == True).group_by(Flag.kind)).all()  # noqa: E712
    instances = []
    real = wall_now()
    for key, row in states.items():
        if key.startswith("instance:") and real - row.updated_at < STALE_HEARTBEAT:
            instances.append({"instance": key.removeprefix("instance:"), "leader": json.loads(row.value).get("leader", False)})
    last_read = states.get("last_inbox_read")
    paused = states.get("smtp_paused")
    oldest = pending[1]
    report = {
        "instances": instances,
        "leader": any(i["leader"] for i in instances),
        "last_inbox_read": last_read.value if last_read else None,
        "outbox_backlog": int(pending[0]),
        "oldest_pending": oldest.isoformat() if oldest else None,
        "failed_sends": int(failed),
        "held_sends": int(held),
        "open_flags": {k: int(n) for k, n in flags},
        "sending_paused": paused.value if paused and paused.value else None,
    }
    problems = []
    if not instances:
        problems.append("no daemon instance has reported in the last minute")
    if settings.imap.enabled and (last_read is None or real - last_read.updated_at > timedelta(minutes=15)):
        problems.append("the inbox has not been read in the last 15 minutes")
    if oldest is not None and now - oldest > timedelta(hours=1) and report["outbox_backlog"]:
        problems.append("emails have been waiting for over an hour")
    if report["sending_paused"]:
        problems.append("sending is paused: " + str(report["sending_paused"]))
    report["problems"] = problems
    return report, not problems


def set_state(engine: Engine, key: str, value: str) -> None:
    now = wall_now()
    with session_scope(engine) as session:
        row = session.get(ServiceState, key) or ServiceState(key=key, updated_at=now)
        row.value, row.updated_at = value, now
        session.add(row)
