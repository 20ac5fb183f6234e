"""The database tables (sqlmodel). Schema changes go through Alembic (mailflow/migrations)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, always returns tz-aware UTC (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime written to the database")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class Person(SQLModel, table=True):
    """A mentor, mentee or referent. One person per email address (lower-cased)."""

    __tablename__ = "people"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    role: str = Field(max_length=16)
    first_name: str = Field(max_length=200)
    last_name: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=32)  # E.164
    language: str = Field(default="fr", max_length=8)
    job: str = Field(default="", max_length=200)
    sector: str = Field(default="", max_length=200)
    bounced: bool = Field(default=False)  # a permanent bounce: mail is held until the address is corrected
    erased: bool = Field(default=False)
    created_at: datetime = Field(sa_column=_ts(nullable=False))


class Pair(SQLModel, table=True):
    __tablename__ = "pairs"
    __table_args__ = (Index("ix_pairs_next_due_at", "next_due_at"),)
    id: int | None = Field(default=None, primary_key=True)
    ref: str = Field(unique=True, max_length=64)
    mentor_id: int = Field(foreign_key="people.id", index=True)
    mentee_id: int = Field(foreign_key="people.id", index=True)
    referent_id: int = Field(foreign_key="people.id", index=True)
    track: str = Field(max_length=32)
    matched_on: date
    state: str = Field(max_length=32, index=True)
    paused_until: date | None = None
    next_due_at: datetime | None = Field(default=None, sa_column=_ts())
    last_reply_at: datetime | None = Field(default=None, sa_column=_ts())
    closed_at: datetime | None = Field(default=None, sa_column=_ts())
    version: int = Field(default=0)  # compare-and-set guard for state writes
    created_at: datetime = Field(sa_column=_ts(nullable=False))


class PairEvent(SQLModel, table=True):
    """The pair's timeline and audit trail; append-only."""

    __tablename__ = "pair_events"
    __table_args__ = (Index("ix_pair_events_pair_at", "pair_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    pair_id: int | None = Field(default=None, foreign_key="pairs.id")
    at: datetime = Field(sa_column=_ts(nullable=False))
    kind: str = Field(max_length=32)
    who: str | None = Field(default=None, max_length=16)
    intent: str | None = Field(default=None, max_length=32)
    email_kind: str | None = Field(default=None, max_length=32)
    slot: str | None = Field(default=None, max_length=64)
    flag: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=64)
    data: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))  # JSON object
    inbound_id: int | None = Field(default=None, foreign_key="inbound_messages.id")


class Flag(SQLModel, table=True):
    """Projection of the flag events, for calls lists and digests. At most one open per (pair, kind, who)."""

    __tablename__ = "flags"
    __table_args__ = (Index("ix_flags_open", "is_open", "pair_id"),)
    id: int | None = Field(default=None, primary_key=True)
    pair_id: int = Field(foreign_key="pairs.id", index=True)
    kind: str = Field(max_length=32)
    who: str | None = Field(default=None, max_length=16)
    reason: str = Field(max_length=64)
    since: datetime = Field(sa_column=_ts(nullable=False))
    is_open: bool = Field(default=True)
    closed_at: datetime | None = Field(default=None, sa_column=_ts())
    closed_reason: str | None = Field(default=None, max_length=64)
    attempt: int = Field(default=1)  # calls: how many times this person has been flagged for a call
    note: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class OutboxMessage(SQLModel, table=True):
    """One email to one recipient. pending -> sending (Message-ID fixed) -> sent | failed; held while bounced."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("idem_key", name="uq_outbox_idem_key"),
        Index("ix_outbox_state_not_before", "state", "not_before"),
    )
    id: int | None = Field(default=None, primary_key=True)
    idem_key: str = Field(max_length=200)
    pair_id: int | None = Field(default=None, foreign_key="pairs.id", index=True)
    person_id: int | None = Field(default=None, foreign_key="people.id", index=True)  # None: the team address
    to_address: str = Field(max_length=320)  # refreshed from the person at send time (address corrections)
    kind: str = Field(max_length=32)
    role: str = Field(max_length=16)
    slot: str = Field(max_length=64)
    state: str = Field(default="pending", max_length=16)
    message_id: str = Field(max_length=255, unique=True)
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))  # extra context (JSON)
    not_before: datetime = Field(sa_column=_ts(nullable=False))
    attempts: int = Field(default=0)
    last_error: str = Field(default="", max_length=500)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_column=_ts())
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=_ts())


class InboundMessage(SQLModel, table=True):
    """A message read from the inbox; its dedup key (Message-ID or raw hash) is applied once."""

    __tablename__ = "inbound_messages"
    id: int | None = Field(default=None, primary_key=True)
    dedup_key: str = Field(max_length=255, unique=True)
    received_at: datetime = Field(sa_column=_ts(nullable=False, index=True))
    kind: str = Field(max_length=16)
    outcome: str = Field(max_length=16)  # processed | unmatched | quarantine | dropped
    target_folder: str = Field(default="", max_length=100)
    pair_id: int | None = Field(default=None, foreign_key="pairs.id", index=True)
    person_id: int | None = Field(default=None, foreign_key="people.id")
    intent: str | None = Field(default=None, max_length=32)
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))  # visible reply text (purged)
    problem: str = Field(default="", max_length=200)
    uid: int | None = None
    uidvalidity: int | None = None


class MailboxState(SQLModel, table=True):
    __tablename__ = "mailbox_state"
    folder: str = Field(primary_key=True, max_length=200)
    uidvalidity: int
    attempts: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))  # uid -> failures


class ServiceState(SQLModel, table=True):
    """Small key/value facts for `mailflow status` (last inbox read, pause reason...)."""

    __tablename__ = "service_state"
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    updated_at: datetime = Field(sa_column=_ts(nullable=False))


class AuditEvent(SQLModel, table=True):
    """Operator actions that are not about one pair (export, erase, purge): who did what, no personal data."""

    __tablename__ = "audit_events"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=_ts(nullable=False))
    action: str = Field(max_length=64)
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
