"""The lifecycle pass: select due pairs through the indexed next_due_at column, advance each in its own transaction.

Cost grows with what is due, not with the programme's size: one indexed range query per batch,
then one short transaction per due pair (its events, decide, the recorded actions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from mailflow.adapters.db import session_scope
from mailflow.adapters.tables import Pair
from mailflow.core.policy import Policy
from mailflow.effects import ConcurrentUpdate, Outgoing, advance
from mailflow.store import get_pair

log = logging.getLogger("mailflow.lifecycle")


@dataclass
class PassStats:
    pairs: int = 0
    actions: int = 0


def due_refs(engine: Engine, now: datetime, limit: int, after_id: int = 0) -> list[tuple[int, str]]:
    with Session(engine) as session:
        query = (
            select(Pair.id, Pair.ref)
            .where(col(Pair.next_due_at) <= now, col(Pair.id) > after_id)
            .order_by(col(Pair.id))
            .limit(limit)
        )
        return [(int(i), r) for i, r in session.exec(query) if i is not None]


def advance_one(engine: Engine, ref: str, now: datetime, policy: Policy, outgoing: Outgoing) -> int:
    """One pair, one transaction. Returns the number of actions recorded."""
    for _ in range(3):
        try:
            with session_scope(engine) as session:
                pair = get_pair(session, ref, for_update=True)
                if pair.next_due_at is None or pair.next_due_at > now:
                    return 0  # another pass got there first
                decision = advance(session, pair, now, policy, outgoing)
                return len(decision.actions)
        except ConcurrentUpdate:
            continue
    log.warning("pair kept changing; retried later", extra={"action": "lifecycle_conflict"})
    return 0


def run_pass(engine: Engine, now: datetime, policy: Policy, outgoing: Outgoing, batch: int = 500) -> PassStats:
    stats = PassStats()
    after = 0
    while True:
        refs = due_refs(engine, now, batch, after)
        if not refs:
            break
        for pair_id, ref in refs:
            stats.actions += advance_one(engine, ref, now, policy, outgoing)
            stats.pairs += 1
            after = pair_id
    if stats.pairs:
        log.info("lifecycle pass", extra={"action": "lifecycle_pass", "pairs": stats.pairs})
    return stats


def next_due(engine: Engine) -> datetime | None:
    """When the lifecycle next has something to do (the daemon sleeps until then)."""
    with Session(engine) as session:
        return session.exec(
            select(Pair.next_due_at).where(col(Pair.next_due_at).is_not(None)).order_by(col(Pair.next_due_at)).limit(1)
        ).first()
