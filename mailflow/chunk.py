"""A fetched chunk of inbound messages inside its transaction: what it needs read at once, what it writes deferred.

The reads (known dedup keys, the outbox rows its tokens and references name, their pairs FOR UPDATE, their
people, their logs) are a few queries for the chunk instead of several per message. Without savepoints the
inbound rows (ids taken up front), events and pair columns are written together before the commit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, or_, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from mailflow.adapters.tables import InboundMessage, OutboxMessage, Pair, Person
from mailflow.core.mail.parse import ParsedMessage
from mailflow.core.model import Event
from mailflow.core.tokens import TokenClaims
from mailflow.errors import NotFoundError
from mailflow.store import Deferred, event_logs, people_by_id


@dataclass(frozen=True)
class Inbound:
    uid: int | None
    parsed: ParsedMessage
    claims: tuple[TokenClaims, ...]

    @property
    def key(self) -> str:
        return self.parsed.message_id or f"sha256:{self.parsed.raw_sha256}"


@dataclass
class Chunk:
    """What a chunk's messages need, read in a few queries; per-message lookups fall back to the session."""

    session: Session
    seen: dict[str, str]  # dedup key -> target folder, for keys already applied
    outbox_by_id: dict[int, Any]
    outbox_by_message_id: dict[str, Any]
    locked: dict[int, Pair]  # pairs read FOR UPDATE with the chunk
    known: dict[int, Person]  # their people (held here: the session's identity map only keeps weak references)
    logs: dict[int, list[Event]]
    pairs: dict[int, Pair] = field(default_factory=dict)
    conn: Connection = field(init=False)  # the transaction's connection (savepoints keep it), for Core statements
    deferred: Deferred | None = None  # without savepoints: rows written together before the commit
    ids: Iterator[int] | None = None  # inbound row ids taken for the deferred inserts

    def __post_init__(self) -> None:
        self.conn = self.session.connection()

    @classmethod
    def read(cls, session: Session, items: Sequence[Inbound]) -> Chunk:
        table = OutboxMessage.__table__  # type: ignore[attr-defined]
        keys = [i.key for i in items]
        known = select(InboundMessage.dedup_key, InboundMessage.target_folder).where(col(InboundMessage.dedup_key).in_(keys))
        seen = dict(session.exec(known).all())
        todo = [i for i in items if i.key not in seen]
        ids = {c.message_id for i in todo for c in i.claims}
        mids = {m for i in todo for m in _outbox_ids(i.parsed)}
        rows = list(session.connection().execute(
            sa_select(table.c.id, table.c.message_id, table.c.person_id, table.c.pair_id, table.c.kind)
            .where(or_(table.c.id.in_(ids), table.c.message_id.in_(mids)))
        ))  # fmt: skip
        by_id = {r.id: r for r in rows}
        by_mid = {r.message_id: r for r in rows}
        pair_ids = {c.pair_id for i in todo for c in i.claims if c.pair_id} | {r.pair_id for r in rows if r.pair_id and r.message_id in mids}
        pairs = {p.id: p for p in session.exec(select(Pair).where(col(Pair.id).in_(pair_ids)).order_by(col(Pair.id)).with_for_update()) if p.id}
        people = people_by_id(session, {c.person_id for i in todo for c in i.claims} | {m for p in pairs.values() for m in _members(p)})
        chunk = cls(session, seen, by_id, by_mid, pairs, people, event_logs(session, sorted(pairs)))
        chunk.pairs = dict(pairs)
        return chunk

    def pair(self, pair_id: int) -> Pair:
        pair = self.pairs.get(pair_id) or self.session.get(Pair, pair_id, with_for_update=True)
        if pair is None:
            raise NotFoundError(f"no pair with id {pair_id}")
        self.pairs[pair_id] = pair
        return pair

    def log(self, pair_id: int) -> list[Event]:
        if pair_id not in self.logs:
            self.write()
            self.session.flush()
            self.logs[pair_id] = event_logs(self.session, [pair_id])[pair_id]
        return self.logs[pair_id]

    def write(self) -> None:
        if self.deferred is not None:
            self.deferred.write(self.conn)

    def insert(self, record: dict[str, Any]) -> int:
        """The inbound row: deferred with an id taken now, else inserted at once."""
        if self.deferred is not None and self.ids is not None:
            record["id"] = next(self.ids)
            self.deferred.insert(_INBOUND, [record])
        else:
            key = self.conn.execute(insert(_INBOUND), record).inserted_primary_key
            assert key is not None
            record["id"] = int(key[0])
        return int(record["id"])

    def person(self, person_id: int) -> Person | None:
        return self.known.get(person_id) or self.session.get(Person, person_id)

    def people(self, pair: Pair) -> dict[int, Person]:
        found = {i: self.person(i) for i in _members(pair)}
        return {i: p for i, p in found.items() if p is not None}

    def forget(self) -> None:
        """After a rolled-back savepoint: what it changed is re-read from the database."""
        self.session.expire_all()
        self.logs.clear()
        self.pairs = dict(self.locked)  # a lock taken inside the savepoint went with it


def _members(pair: Pair) -> tuple[int, int, int]:
    return (pair.mentor_id, pair.mentee_id, pair.referent_id)


def _outbox_ids(parsed: ParsedMessage) -> list[str]:
    """Message-IDs that may be ours: its own (a loop), what it answers, what a bounce returns."""
    ids = list(parsed.references)
    if parsed.bounce and parsed.bounce.original_message_id:
        ids.append(parsed.bounce.original_message_id)
    return ids + ([parsed.message_id] if parsed.message_id else [])


_INBOUND = InboundMessage.__table__  # type: ignore[attr-defined]


def take_ids(conn: Connection, n: int) -> list[int]:
    """n ids for inbound rows inserted later in this transaction (PostgreSQL: its sequence; SQLite: the
    transaction holds the write lock from BEGIN IMMEDIATE, so nobody else inserts until it commits)."""
    if conn.dialect.name == "postgresql":
        query = text("SELECT nextval(pg_get_serial_sequence('inbound_messages', 'id')) FROM generate_series(1, :n)")
        return [int(i) for i in conn.execute(query, {"n": n}).scalars()]
    start = int(conn.execute(select(func.coalesce(func.max(_INBOUND.c.id), 0))).scalar_one()) + 1
    return list(range(start, start + n))
