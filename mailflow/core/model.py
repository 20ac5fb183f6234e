"""The programme's vocabulary (from CONTRACT.md) and the plain data the core works on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class State(StrEnum):
    AWAITING_FIRST_CONTACT = "awaiting_first_contact"
    ACTIVE = "active"
    CLOSED = "closed"
    ENDED_NO_CONTACT = "ended_no_contact"


class Role(StrEnum):
    MENTOR = "mentor"
    MENTEE = "mentee"
    REFERENT = "referent"


class Track(StrEnum):
    ORIENTATION = "orientation"
    STAGE_ALTERNANCE = "stage_alternance"
    PARCOURSUP = "parcoursup"


class FlagKind(StrEnum):
    CALL = "call"  # who = mentor|mentee; reason no_reply|bounce
    URGENT = "urgent"  # reason support_needed; who = the person who wrote
    CLOSURE_REQUESTED = "closure_requested"
    REMATCH = "rematch"  # who = mentor
    REVIEW = "review"  # a message a person must read


class FlagReason(StrEnum):
    NO_REPLY = "no_reply"
    BOUNCE = "bounce"
    SUPPORT_NEEDED = "support_needed"
    STOP = "stop"
    NO_CONTACT = "no_contact"
    UNCLEAR_REPLY = "unclear_reply"
    DIFFICULTY = "difficulty"
    SENDER_MISMATCH = "sender_mismatch"


class Intent(StrEnum):
    OK = "ok"
    MET = "met"
    DIFFICULTY = "difficulty"
    STOP = "stop"
    CONTINUE = "continue"
    SUPPORT_NEEDED = "support_needed"
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


class EmailKind(StrEnum):
    """Every outgoing email carries `X-Mailflow-Kind: <value>`."""

    INTRODUCTION = "introduction"
    FIRST_CONTACT_REMINDER = "first_contact_reminder"
    NO_CONTACT_NOTICE = "no_contact_notice"
    FOLLOWUP = "followup"
    FOLLOWUP_REMINDER = "followup_reminder"
    CHECKPOINT = "checkpoint"
    CLOSURE = "closure"
    DIGEST = "digest"
    URGENT_ALERT = "urgent_alert"


class MessageKind(StrEnum):
    """What an inbound message is (the `kind` of `mailflow parse`)."""

    REPLY = "reply"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    OTHER = "other"


class EventKind(StrEnum):
    """Kinds of rows in a pair's event log (its timeline and audit trail)."""

    IMPORTED = "imported"
    EMAIL_QUEUED = "email_queued"  # email_kind, who (recipient role), slot
    REPLY = "reply"  # a human reply: who, intent, replied_kind
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"  # who, data["permanent"]
    STATE_CHANGED = "state_changed"  # data["from"], data["to"]
    FLAG_RAISED = "flag_raised"  # flag, who, reason
    FLAG_CLEARED = "flag_cleared"  # flag, who, reason (why it cleared)
    CLOSED_BY_OPERATOR = "closed_by_operator"
    PAUSED = "paused"  # data["until"] ISO date
    RESUMED = "resumed"
    CALL_DONE = "call_done"  # who, data["note"]
    REASSIGNED = "reassigned"
    ADDRESS_CORRECTED = "address_corrected"  # who


@dataclass(frozen=True)
class Event:
    """One entry of a pair's log, as the core sees it (plain data; the DB row is an adapter's)."""

    kind: EventKind
    at: datetime  # tz-aware
    who: Role | None = None
    intent: Intent | None = None
    email_kind: EmailKind | None = None  # EMAIL_QUEUED: what was queued; REPLY: what it answered
    slot: str | None = None  # EMAIL_QUEUED: the idempotency slot
    flag: FlagKind | None = None  # FLAG_RAISED / FLAG_CLEARED
    reason: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PairView:
    """What the lifecycle needs to know about a pair besides its events."""

    ref: str
    state: State
    matched_on: date
    paused_until: date | None = None
    mentor_bounced: bool = False  # mail to this person is held until the address is corrected
    mentee_bounced: bool = False


# ---- actions the core asks the shell to carry out (plain data) ----


@dataclass(frozen=True)
class SendEmail:
    kind: EmailKind
    to: Role
    slot: str  # idempotency: (pair, kind, to, slot) is unique in the outbox


@dataclass(frozen=True)
class RaiseFlag:
    kind: FlagKind
    who: Role | None
    reason: str


@dataclass(frozen=True)
class ClearFlag:
    kind: FlagKind
    who: Role | None
    reason: str  # why it cleared: "replied", "call_done", "closed", ...


Action = SendEmail | RaiseFlag | ClearFlag


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...]
    next_due_at: datetime | None  # when decide() has something to do next (None: nothing timed)
