"""A realistic programme written straight into the database with bulk inserts (executemany / COPY).

N pairs spread over a programme year (matched every day of the past year), two hundred referents,
and for each pair the event log, outbox rows (sent) and flags its state implies, as mailflow
itself would have recorded them: introductions, first-contact reminders, the day-21 timeout,
monthly follow-up rounds with replies (sometimes a reminder, a call flag and a call), the month-6
checkpoint, closures. Everything happens at the instants the calendar rules give (Paris time,
sending window), so `decide` on a background pair asks for nothing: `next_due_at` is in the future
(or None for ended and closed pairs).

`due` pairs (3,300 by default, whatever N: a busy day) are due at `now`: pairs imported this
morning (introductions), reminders on day 7 and 14, day-21 timeouts, follow-up rounds, follow-up
reminders and call flags. Their ids are spread over the table, so the pass really has to find them
through the `next_due_at` index.

`replies()` writes the inbound replies of the inbox figure in the styles of real clients (Gmail,
Outlook desktop and web, Apple Mail, iPhone, plain French), top-posted over the quoted original,
addressed to the signed Reply-To of a sent follow-up (as a client answering it would).
"""

from __future__ import annotations

import functools
import json
import queue
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update

from mailflow.adapters.tables import Flag, InboundMessage, OutboxMessage, Pair, PairEvent, Person
from mailflow.core import calendar
from mailflow.core.addresses import plus_address
from mailflow.core.calendar import add_months
from mailflow.core.policy import Policy
from mailflow.core.tokens import TokenPurpose, TokenSigner

BUSY_DAY = "2027-03-02T09:30"  # a Tuesday (Paris): every multiple of 7 days back is a Tuesday too
DOMAIN = "example.org"
TRACKS = ("orientation", "stage_alternance", "parcoursup")
FIRST = (
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Inès",
    "Sarah",
    "Jade",
    "Louise",
    "Emma",
    "Zoé",
    "Lina",
    "Nour",
    "Yasmine",
    "Aïcha",
    "Fatou",
    "Clara",
    "Julie",
    "Anaïs",
    "Lucas",
    "Hugo",
    "Louis",
    "Nathan",
    "Enzo",
    "Yanis",
    "Mehdi",
    "Adam",
    "Rayan",
    "Karim",
    "Théo",
    "Maxime",
    "Thomas",
    "Antoine",
    "Mamadou",
    "Moussa",
    "Paul",
)
LAST = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "Benali",
    "Diallo",
    "Nguyen",
)
JOBS = ("Ingénieure logiciel", "Comptable", "Infirmier", "Cheffe de projet", "Juriste", "Électricien", "Professeure", "Commercial")
SECTORS = ("Numérique", "Santé", "Banque", "BTP", "Commerce", "Industrie", "Éducation", "Droit")

# share of each kind of due pair (a busy day)
DUE_MIX = (("new", 0.30), ("d7", 0.12), ("d14", 0.12), ("d21", 0.08), ("round", 0.30), ("reminder", 0.05), ("call", 0.03))
# background pairs by state (not due today)
BACKGROUND_MIX = (("awaiting", 0.05), ("ended", 0.15), ("active", 0.55), ("closed", 0.25))


@dataclass(frozen=True)
class Spec:
    pairs: int
    due: int = 3300
    referents: int = 200
    seed: int = 9
    now_local: str = BUSY_DAY
    active_kept: int = 10_000  # background active pairs remembered for the send and inbox figures (the first ones)


@dataclass(frozen=True)
class ActivePair:
    """A background active pair (reply and send figures pick from these)."""

    pair_id: int
    ref: str
    rounds: int  # follow-up rounds sent so far
    mentor: tuple[int, str, str]  # (person id, email, first name)
    mentee: tuple[int, str, str]
    last_followup: dict[str, tuple[int, str]]  # role -> (outbox id, Message-ID) of the latest follow-up


@dataclass
class Programme:
    spec: Spec
    now: datetime
    due_ids: list[int] = field(default_factory=list)
    active: list[ActivePair] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written


# The calendar functions are pure and a programme year has only a few thousand distinct (day, n) and (day, time):
# memoised, they are computed once instead of once per email (a fifth of the generator's time).
at_local = functools.lru_cache(maxsize=1 << 16)(calendar.at_local)
day_n = functools.lru_cache(maxsize=1 << 16)(calendar.day_n)
due_on = functools.lru_cache(maxsize=1 << 16)(calendar.due_on)

# ---- writing --------------------------------------------------------------------------------

PEOPLE_COLS = ("id", "email", "role", "first_name", "last_name", "phone", "language", "job", "sector", "bounced", "erased", "created_at")
PAIR_COLS = ("id", "ref", "mentor_id", "mentee_id", "referent_id", "track", "matched_on", "state", "paused_until",
             "next_due_at", "last_reply_at", "closed_at", "version", "created_at")  # fmt: skip
EVENT_COLS = ("id", "pair_id", "at", "kind", "who", "intent", "email_kind", "slot", "flag", "reason", "data", "inbound_id")
FLAG_COLS = ("id", "pair_id", "kind", "who", "reason", "since", "is_open", "closed_at", "closed_reason", "attempt", "note")
OUTBOX_COLS = ("id", "idem_key", "pair_id", "person_id", "to_address", "kind", "role", "slot", "state", "message_id", "payload",
               "not_before", "attempts", "last_error", "lease_owner", "lease_until", "created_at", "sent_at")  # fmt: skip
TABLES = {"people": PEOPLE_COLS, "pairs": PAIR_COLS, "pair_events": EVENT_COLS, "flags": FLAG_COLS, "outbox": OUTBOX_COLS}


SQLITE_CACHE_KB = 64_000


def _ts(t: datetime | None) -> str | None:
    """An instant as both databases take it: SQLAlchemy's SQLite DATETIME text (naive UTC), which PostgreSQL's COPY
    reads as UTC (the writer's session time zone). One format: the same rows go to every database."""
    if t is None:
        return None
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    return t.isoformat(" ", "microseconds")[:26]  # without "+00:00"


def _day(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


Batch = list[tuple[str, list[tuple[Any, ...]]]]  # (table, rows) of one transaction


class _Writer:
    """Raw DB-API bulk writes into one database: COPY on PostgreSQL, executemany in one transaction on SQLite.

    In a thread of its own, fed batches through a short queue: the database's work (SQLite's inserts
    release the GIL, PostgreSQL's COPY is another process) overlaps the generation of the next batch.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=2)  # bounded: at most a few batches in memory
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"bench-writer-{engine.dialect.name}", daemon=True)
        self.thread.start()

    def submit(self, batch: Batch | None) -> None:
        """Queue one transaction's rows (None: finish and close)."""
        while True:
            if self.error is not None:
                raise RuntimeError(f"bulk load into {self.engine.dialect.name} failed") from self.error
            try:
                self.queue.put(batch, timeout=1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.submit(None)
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"bulk load into {self.engine.dialect.name} failed") from self.error

    def _run(self) -> None:
        try:
            self._open()
            while (batch := self.queue.get()) is not None:
                for table, rows in batch:
                    self._write(table, rows)
                self._commit()
            self._close()
        except BaseException as exc:  # handed to the generating thread (submit/finish raise it)
            self.error = exc

    def _open(self) -> None:
        engine = self.engine
        self.proxy = engine.raw_connection()
        self.conn: Any = self.proxy.driver_connection
        self.pg = engine.dialect.name == "postgresql"
        if self.pg:
            self.conn.execute("SET TIME ZONE 'UTC'")  # the rows' timestamps are naive UTC text
        else:
            # this connection only: a larger page cache than the default 2 MB for the index inserts; 64 MB is as fast
            # as 400 MB was, and it counts in the benchmark's peak RSS (this process)
            self.conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KB}")
            self.conn.execute("BEGIN")

    def _write(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        cols = TABLES[table]
        if self.pg:
            with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            self.conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)

    def _commit(self) -> None:
        if self.pg:
            self.conn.commit()
        else:
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN")

    def _close(self) -> None:
        if self.pg:
            self.conn.commit()
            with self.conn.cursor() as cur:
                for table in TABLES:
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            self.conn.commit()
            self.conn.autocommit = True
            # what autovacuum would do after a bulk load (mailflow never runs ANALYZE on SQLite), done here so that it
            # does not run in the background while figures are measured
            self.conn.execute("VACUUM (ANALYZE)")
            self.conn.autocommit = False
        else:
            self.conn.execute("COMMIT")
        # closed, not returned to the pool: mailflow must not get a connection with the bulk load's page cache
        self.proxy.invalidate()


# ---- one pair's history ---------------------------------------------------------------------


class _Pair:
    """Builds one pair's events (sorted by time at the end), outbox rows and flags."""

    def __init__(self, g: _Gen, pid: int, mentor: tuple[int, str, str], mentee: tuple[int, str, str]) -> None:
        self.g, self.id, self.ref = g, pid, f"P{pid:06d}"
        self.people = {"mentor": mentor, "mentee": mentee}
        self.events: list[tuple[datetime, int, tuple[Any, ...]]] = []
        self.last_mail: dict[tuple[str, str], tuple[int, str]] = {}  # (kind, role) -> (outbox id, Message-ID)
        self.last_reply: datetime | None = None
        self.matched: date = g.today

    def ev(self, kind: str, at: datetime, who: str | None = None, intent: str | None = None, email_kind: str | None = None,
           slot: str | None = None, flag: str | None = None, reason: str | None = None, data: dict[str, str] | None = None) -> None:  # fmt: skip
        body = (kind, who, intent, email_kind, slot, flag, reason, json.dumps(data, ensure_ascii=False, sort_keys=True) if data else "{}")
        self.events.append((at, len(self.events), body))

    def mail(self, kind: str, role: str, slot: str, at: datetime) -> None:
        g = self.g
        person_id, email, _ = self.people[role]
        oid = g.next_id("outbox")
        mid = f"<{oid:010d}.{g.rng.getrandbits(48):012x}@{DOMAIN}>"
        queued = _ts(at)
        g.outbox.append((
            oid, f"{self.ref}:{kind}:{role}:{slot}", self.id, person_id, email, kind, role, slot, "sent", mid, "{}",
            queued, 1, "", None, None, queued, _ts(at + timedelta(seconds=g.rng.randint(1, 90))),
        ))  # fmt: skip
        self.last_mail[(kind, role)] = (oid, mid)
        self.ev("email_queued", at, who=role, email_kind=kind, slot=slot)

    def reply(self, role: str, at: datetime, intent: str, answered: str) -> None:
        self.ev("reply", at, who=role, intent=intent, email_kind=answered)
        self.last_reply = at if self.last_reply is None else max(self.last_reply, at)

    def flag(self, kind: str, who: str | None, reason: str, at: datetime, cleared: tuple[datetime, str] | None = None, attempt: int = 1) -> None:
        g = self.g
        self.ev("flag_raised", at, who=who, flag=kind, reason=reason)
        if cleared is not None:
            self.ev("flag_cleared", cleared[0], who=who, flag=kind, reason=cleared[1])
        g.flags.append((
            g.next_id("flags"), self.id, kind, who, reason, _ts(at), cleared is None,
            _ts(cleared[0]) if cleared else None, cleared[1] if cleared else None, attempt, "",
        ))  # fmt: skip

    def state(self, at: datetime, old: str, new: str) -> None:
        self.ev("state_changed", at, data={"from": old, "to": new})

    def flush(self) -> None:
        g = self.g
        for at, _, body in sorted(self.events, key=lambda e: (e[0], e[1])):
            g.events.append((g.next_id("pair_events"), self.id, _ts(at), body[0], *body[1:], None))


class _Gen:
    def __init__(self, engines: Sequence[Engine], spec: Spec, policy: Policy) -> None:
        self.spec, self.policy = spec, policy
        self.rng = random.Random(spec.seed)
        self.writers = [_Writer(engine) for engine in engines]
        self.ids = {t: 0 for t in TABLES}
        self.people: list[tuple[Any, ...]] = []
        self.pairs: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.flags: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []
        self.written = {t: 0 for t in TABLES}
        local = datetime.fromisoformat(spec.now_local)
        self.today = local.date()
        self.now = at_local(self.today, local.time(), policy)

    def next_id(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def at(self, d: date, hh: int, mm: int = 0) -> datetime:
        return at_local(d, time(hh, mm), self.policy)

    def dn(self, base: date, n: int, minutes: int = 5) -> datetime:
        return day_n(base, n, self.policy) + timedelta(minutes=minutes)

    def flush(self) -> None:
        """Hand the rows so far to every database's writer (the same lists: never changed afterwards) and start new ones."""
        batch: Batch = [("people", self.people), ("pairs", self.pairs), ("pair_events", self.events), ("flags", self.flags),
                        ("outbox", self.outbox)]  # fmt: skip
        for table, rows in batch:
            self.written[table] += len(rows)
        for w in self.writers:
            w.submit(batch)
        self.people, self.pairs, self.events, self.flags, self.outbox = [], [], [], [], []

    def person(self, role: str, i: int, lang_en: bool = False) -> tuple[int, str, str]:
        r = self.rng
        pid = self.next_id("people")
        first, last = r.choice(FIRST), r.choice(LAST)
        email = f"{_ascii(first)}.{_ascii(last)}{i}@{'example.net' if role == 'mentee' else 'example.com'}".lower()
        phone = f"+336{r.randint(10_000_000, 99_999_999)}"
        job = r.choice(JOBS) if role == "mentor" else ""
        self.people.append((pid, email, role, first, last, phone, "en" if lang_en else "fr", job, r.choice(SECTORS), False, False,
                            _ts(self.now - timedelta(days=400))))  # fmt: skip
        return pid, email, first


def _ascii(s: str) -> str:
    return s.translate(str.maketrans("éèêëïîôàçÉ", "eeeeiioacE")).replace(" ", "")


# ---- the histories ----------------------------------------------------------------------------


def _introduced(p: _Pair, matched: date, reminders_before: int) -> None:
    g = p.g
    t = g.at(matched, 9)
    p.ev("imported", t - timedelta(minutes=3), data={"line": str(p.id)})
    p.mail("introduction", "mentor", "intro", t)
    p.mail("introduction", "mentee", "intro", t)
    for d in g.policy.reminder_days:
        if d < reminders_before:
            p.mail("first_contact_reminder", "mentee", f"d{d}", g.dn(matched, d))


def _reply_at(g: _Gen, sent: datetime, until: datetime) -> datetime:
    room = (until - sent).total_seconds() - 3600
    return sent + timedelta(seconds=g.rng.uniform(1800, max(1801, min(room, 3 * 86400))))


def _active(p: _Pair, act_day: date, until: datetime, latest_silent: Sequence[str] = ()) -> int:
    """Introduction, first contact, rounds 1..m (m = rounds up to `until`); returns m."""
    g, r, pol = p.g, p.g.rng, p.g.policy
    k = r.randint(2, 20)
    matched = act_day - timedelta(days=k)
    p.matched = matched
    _introduced(p, matched, k)
    met = g.at(act_day, 18, r.randint(0, 59))
    p.reply("mentee", met, "met", "introduction" if k <= 7 else "first_contact_reminder")
    p.state(met + timedelta(seconds=1), "awaiting_first_contact", "active")
    interval = pol.followup_interval_days
    m = 0
    while True:
        sent = day_n(act_day, interval * (m + 1), pol)
        if sent > until:
            break
        m += 1
    ckpt = due_on(add_months(matched, pol.checkpoint_months), pol)
    if ckpt <= until:
        p.mail("checkpoint", "mentor", f"m{pol.checkpoint_months}", ckpt + timedelta(minutes=5))
        p.mail("checkpoint", "mentee", f"m{pol.checkpoint_months}", ckpt + timedelta(minutes=5))
    for n in range(1, m + 1):
        sent = day_n(act_day, interval * n, pol) + timedelta(minutes=5)
        sent_day = sent.astimezone(_paris(pol)).date()
        p.mail("followup", "mentor", f"f{n}", sent)
        p.mail("followup", "mentee", f"f{n}", sent)
        latest = n == m
        for role in ("mentor", "mentee"):
            if latest and role in latest_silent:
                continue
            if latest or r.random() < 0.85:
                p.reply(role, _reply_at(g, sent, until), _intent(r), "followup")
                continue
            # silent: reminder on day 4, call flag on day 7, the referent calls, the person replies
            p.mail("followup_reminder", role, f"f{n}", g.dn(sent_day, pol.followup_reminder_days))
            call_at = g.dn(sent_day, pol.call_after_days, 1)
            done = call_at + timedelta(days=r.randint(1, 3), hours=2)
            p.flag("call", role, "no_reply", call_at, cleared=(done + timedelta(seconds=1), "call_done"))
            p.ev("call_done", done, who=role, data={"note": "joint, tout va bien"})
    if latest_silent and m:
        sent_day = day_n(act_day, interval * m, pol).astimezone(_paris(pol)).date()
        if day_n(sent_day, pol.followup_reminder_days, pol) <= until:
            for role in latest_silent:  # the day-4 reminder went (the day-7 call flag is what is due)
                p.mail("followup_reminder", role, f"f{m}", g.dn(sent_day, pol.followup_reminder_days))
    return m


def _paris(pol: Policy) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(pol.timezone)


def _intent(r: random.Random) -> str:
    x = r.random()
    return "ok" if x < 0.8 else "continue" if x < 0.9 else "met" if x < 0.97 else "available"


def _due_pair(g: _Gen, p: _Pair, kind: str) -> tuple[str, date, datetime, datetime | None]:
    """(state, matched_on, next_due_at, last_reply_at) of a pair due today."""
    today, pol, r = g.today, g.policy, g.rng
    eight = day_n(today, 0, pol)
    if kind == "new":
        t = g.now - timedelta(minutes=r.randint(10, 80))
        p.ev("imported", t, data={"line": str(p.id)})
        return "awaiting_first_contact", today, t, None
    if kind in ("d7", "d14", "d21"):
        age = int(kind[1:])
        matched = today - timedelta(days=age)
        _introduced(p, matched, age)
        return "awaiting_first_contact", matched, eight, None
    interval = pol.followup_interval_days
    rounds = r.randint(1, 8)
    if kind == "round":  # round `rounds` starts today
        act = today - timedelta(days=interval * rounds)
        _active(p, act, g.now - timedelta(hours=2))
    else:  # the latest round went 4 (reminder) or 7 (call) days ago; someone is silent
        back = pol.followup_reminder_days if kind == "reminder" else pol.call_after_days
        act = today - timedelta(days=back + interval * rounds)
        silent = r.choice((("mentor",), ("mentee",), ("mentor", "mentee")))
        _active(p, act, g.now - timedelta(hours=2), silent)
    return "active", p.matched, eight, p.last_reply


def _background(g: _Gen, p: _Pair, kind: str) -> tuple[str, date, datetime | None, datetime | None, datetime | None, int]:
    """(state, matched_on, next_due_at, last_reply_at, closed_at, rounds) of a pair not due today."""
    today, pol, r = g.today, g.policy, g.rng
    if kind == "awaiting":
        age = r.choice([a for a in range(1, pol.first_contact_days) if a not in pol.reminder_days])
        matched = today - timedelta(days=age)
        _introduced(p, matched, age)
        nxt = [d for d in (*pol.reminder_days, pol.first_contact_days) if d > age][0]
        return "awaiting_first_contact", matched, day_n(matched, nxt, pol), None, None, 0
    if kind == "ended":
        matched = today - timedelta(days=r.randint(pol.first_contact_days + 1, 365))
        _introduced(p, matched, pol.first_contact_days)
        end = day_n(matched, pol.first_contact_days, pol) + timedelta(minutes=5)
        p.state(end, "awaiting_first_contact", "ended_no_contact")
        p.mail("no_contact_notice", "mentor", "end", end)
        cleared = (end + timedelta(days=r.randint(2, 20)), "rematched") if r.random() < 0.85 else None
        p.flag("rematch", "mentor", "no_contact", end, cleared=cleared)
        return "ended_no_contact", matched, None, None, None, 0
    interval = pol.followup_interval_days
    if kind == "active":
        since = r.randint(1, 300)
        if since % interval == 0:
            since += 1  # a round starting today would make it due
        act = today - timedelta(days=since)
        m = _active(p, act, g.now - timedelta(hours=1))
        if r.random() < 0.04:  # an unread difficulty: open review flag (digest material)
            t = p.last_reply or g.now - timedelta(days=1)
            t2 = t + timedelta(minutes=7)
            p.reply("mentor", t2, "difficulty", "followup")
            p.flag("review", "mentor", "difficulty", t2 + timedelta(seconds=1))
        nxt = day_n(act, interval * (m + 1), pol)
        ckpt = due_on(add_months(p.matched, pol.checkpoint_months), pol)
        if ckpt > g.now:
            nxt = min(nxt, ckpt)
        return "active", p.matched, nxt, p.last_reply, None, m
    # closed: active for a while, then closed by the operator (sometimes after a "stop" reply)
    act = today - timedelta(days=r.randint(40, 330))
    close_day = act + timedelta(days=r.randint(20, (today - act).days - 1))
    closed_at = g.at(close_day, 11, r.randint(0, 59))
    _active(p, act, closed_at - timedelta(hours=1))
    if r.random() < 0.3:
        t = closed_at - timedelta(days=1)
        p.reply("mentee", t, "stop", "followup")
        p.flag("closure_requested", None, "stop", t + timedelta(seconds=1), cleared=(closed_at + timedelta(seconds=2), "closed"))
    p.ev("closed_by_operator", closed_at)
    p.state(closed_at + timedelta(seconds=1), "active", "closed")
    p.mail("closure", "mentor", "close", closed_at + timedelta(seconds=3))
    p.mail("closure", "mentee", "close", closed_at + timedelta(seconds=3))
    return "closed", p.matched, None, p.last_reply, closed_at, 0


def _kinds(rng: random.Random, n: int, mix: Sequence[tuple[str, float]]) -> list[str]:
    out: list[str] = []
    for name, share in mix:
        out += [name] * round(n * share)
    out = (out + [mix[0][0]] * n)[:n]
    rng.shuffle(out)
    return out


def generate(engine: Engine | Sequence[Engine], spec: Spec, policy: Policy, chunk: int = 500,
             progress: Callable[[str], None] | None = None) -> Programme:  # fmt: skip
    """Write the programme into one or several empty, migrated databases (the same rows, computed once, go to each).

    Returns what the figures need (the same for every database: the ids are the generator's).
    """
    g = _Gen([engine] if isinstance(engine, Engine) else engine, spec, policy)
    prog = Programme(spec=spec, now=g.now)
    referents = []
    for i in range(spec.referents):
        pid = g.next_id("people")
        first, last = g.rng.choice(FIRST), g.rng.choice(LAST)
        email = f"referent{i}@mentorat.{DOMAIN}"
        g.people.append((pid, email, "referent", first, last, "+33140000000", "fr", "", "", False, False, _ts(g.now - timedelta(days=500))))
        referents.append(pid)
    due = min(spec.due, spec.pairs)
    kinds = [("due", k) for k in _kinds(g.rng, due, DUE_MIX)] + [("bg", k) for k in _kinds(g.rng, spec.pairs - due, BACKGROUND_MIX)]
    g.rng.shuffle(kinds)  # due pairs are spread over the ids (and so over the table)
    for i, (group, kind) in enumerate(kinds):
        pid = g.next_id("pairs")
        p = _Pair(g, pid, g.person("mentor", i), g.person("mentee", i, lang_en=g.rng.random() < 0.03))
        closed_at, rounds = None, 0
        if group == "due":
            state, matched, nxt, last_reply = _due_pair(g, p, kind)
            prog.due_ids.append(pid)
        else:
            state, matched, nxt, last_reply, closed_at, rounds = _background(g, p, kind)
        p.flush()
        g.pairs.append((
            pid, p.ref, p.people["mentor"][0], p.people["mentee"][0], referents[i % len(referents)], TRACKS[i % 3],
            _day(matched), state, None, _ts(nxt), _ts(last_reply), _ts(closed_at),
            len([e for e in p.events if e[2][0] == "state_changed"]), _ts(g.at(matched, 9) - timedelta(minutes=3)),
        ))  # fmt: skip
        if group == "bg" and kind == "active" and rounds and len(prog.active) < spec.active_kept:  # not 55,000 of them
            last = {role: p.last_mail[("followup", role)] for role in ("mentor", "mentee")}
            prog.active.append(ActivePair(pid, p.ref, rounds, p.people["mentor"], p.people["mentee"], last))
        if len(g.pairs) >= chunk:
            g.flush()
            if progress:
                progress(f"{pid}/{spec.pairs} pairs")
    g.flush()
    for w in g.writers:
        w.finish()
    prog.rows = dict(g.written)
    return prog


# ---- the send figure: due follow-ups queued in the outbox ----------------------------------


def queue_pending(engine: Engine, prog: Programme, n: int, now: datetime, skip: int = 0) -> list[int]:
    """`n` pending outbox rows: the next follow-up round of background active pairs (both people)."""
    rows = []
    for ap in prog.active[skip:]:
        for role, (pid, email, _) in (("mentor", ap.mentor), ("mentee", ap.mentee)):
            if len(rows) >= n:
                break
            slot = f"f{ap.rounds + 1}"
            rows.append({
                "idem_key": f"{ap.ref}:followup:{role}:{slot}", "pair_id": ap.pair_id, "person_id": pid, "to_address": email,
                "kind": "followup", "role": role, "slot": slot, "state": "pending",
                "message_id": f"<{random.getrandbits(64):016x}.b{ap.pair_id}{role[3]}@{DOMAIN}>", "payload": "{}",
                "not_before": now, "attempts": 0, "last_error": "", "created_at": now,
            })  # fmt: skip
        if len(rows) >= n:
            break
    with engine.begin() as conn:
        conn.execute(insert(OutboxMessage), rows)
        ids = [i for (i,) in conn.execute(select(OutboxMessage.id).where(OutboxMessage.state == "pending"))]  # type: ignore[call-overload]
    return ids


def reset_pending(engine: Engine, ids: Sequence[int]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(ids), 1000):
            part = list(ids[start : start + 1000])
            conn.execute(
                update(OutboxMessage).where(OutboxMessage.id.in_(part))  # type: ignore[union-attr]
                .values(state="pending", attempts=0, lease_owner=None, lease_until=None, sent_at=None, last_error="")
            )  # fmt: skip


# ---- snapshot / restore (each repetition starts from the same data) -------------------------


class Snapshot:
    """Undo what a pass or an inbox read did to `pair_ids` (new rows deleted, pairs and flags put back)."""

    def __init__(self, engine: Engine, pair_ids: Sequence[int]) -> None:
        self.engine, self.pair_ids = engine, list(pair_ids)
        with engine.connect() as conn:
            self.marks = {t: conn.execute(select(func.coalesce(func.max(t.id), 0))).scalar_one()
                          for t in (PairEvent, OutboxMessage, Flag, InboundMessage)}  # fmt: skip
            cols = [Pair.id, Pair.state, Pair.version, Pair.next_due_at, Pair.last_reply_at, Pair.closed_at]
            self.pairs = [dict(r._mapping) for part in _parts(self.pair_ids) for r in conn.execute(select(*cols).where(Pair.id.in_(part)))]  # type: ignore[union-attr]
            self.flags = [dict(r._mapping) for part in _parts(self.pair_ids)
                          for r in conn.execute(select(Flag.__table__).where(Flag.pair_id.in_(part)))]  # type: ignore[attr-defined]  # fmt: skip
            people = select(Person.id, Person.bounced).join(Pair, (Pair.mentor_id == Person.id) | (Pair.mentee_id == Person.id))  # type: ignore[arg-type]
            self.people = [dict(r._mapping) for part in _parts(self.pair_ids) for r in conn.execute(people.where(Pair.id.in_(part)))]  # type: ignore[union-attr]

    def restore(self) -> None:
        if self.engine.dialect.name == "sqlite":
            # pair_events.inbound_id has no index: with foreign_keys=ON each deleted inbound row would scan all
            # 2.3M events (minutes). The events that point at them are deleted here too, so the check is moot.
            raw = self.engine.raw_connection()
            try:
                db = raw.driver_connection
                db.execute("PRAGMA foreign_keys=OFF")
                db.execute("DELETE FROM pair_events WHERE id > ?", (self.marks[PairEvent],))
                db.execute("DELETE FROM inbound_messages WHERE id > ?", (self.marks[InboundMessage],))
                db.execute("PRAGMA foreign_keys=ON")
            finally:
                raw.close()
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":  # same reason: no FK trigger scans (we are the superuser)
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            conn.execute(delete(PairEvent).where(PairEvent.id > self.marks[PairEvent]))  # type: ignore[operator]
            conn.execute(delete(InboundMessage).where(InboundMessage.id > self.marks[InboundMessage]))  # type: ignore[operator]
            conn.execute(delete(OutboxMessage).where(OutboxMessage.id > self.marks[OutboxMessage]))  # type: ignore[operator]
            for part in _parts(self.pair_ids):
                conn.execute(delete(Flag).where(Flag.pair_id.in_(part)))
            if self.flags:
                conn.execute(insert(Flag.__table__), self.flags)
            conn.execute(delete(Flag).where(Flag.id > self.marks[Flag]))  # type: ignore[operator]
            conn.execute(
                update(Pair.__table__).where(Pair.__table__.c.id == bindparam("pid")),
                [{"pid": p["id"], **{k: v for k, v in p.items() if k != "id"}} for p in self.pairs],
            )
            conn.execute(
                update(Person.__table__).where(Person.__table__.c.id == bindparam("pid")),
                [{"pid": p["id"], "bounced": p["bounced"]} for p in self.people],
            )


def _parts(ids: Sequence[int], size: int = 900) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


# ---- inbound replies in the styles of real clients ------------------------------------------

_BODIES = (  # (intent a reader expects, visible text)
    ("ok", "Tout se passe bien, merci !"),
    ("ok", "1"),
    ("ok", "Bonjour,\n\nTout va bien de notre côté, nous nous voyons toutes les deux semaines.\n\nBonne journée"),
    ("ok", "Oui tout roule 👍"),
    ("met", "On s'est appelés hier soir, premier rendez-vous fait."),
    ("continue", "Oui, on continue avec plaisir !"),
    ("difficulty", "2 - il ne répond plus depuis trois semaines"),
    ("difficulty", "C'est compliqué en ce moment, nous n'arrivons pas à trouver de créneau."),
    ("stop", "3. Nous souhaitons arrêter, merci pour tout."),
    ("support_needed", "Bonjour, j'aurais besoin de parler à quelqu'un rapidement s'il vous plaît, ça ne va pas du tout."),
    ("unknown", "Pouvez-vous me rappeler le numéro de téléphone de l'équipe ?"),
)
_WEIGHTS = (30, 12, 12, 6, 8, 8, 6, 4, 4, 2, 8)
_STYLES = ("gmail", "outlook", "outlook_web", "apple", "iphone", "plain")
_DAYS_FR = ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."]
_MONTHS_FR = ["janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."]


def _original_text(first: str) -> str:
    return (
        f"Bonjour {first},\n\nCela fait un mois : où en êtes-vous ? Il suffit de répondre avec un chiffre :\n"
        "1 = tout va bien\n2 = nous rencontrons une difficulté\n3 = nous souhaitons arrêter\n\n"
        "Vous pouvez aussi nous écrire quelques mots.\n\nL'équipe Mentorat\n-- \nProgramme de mentorat\nmentorat@example.org"
    )


def _html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _html(s: str) -> str:
    return "<br>".join(_html_escape(s).split("\n"))


def reply_message(style: str, body: str, *, sender: tuple[str, str], to: str, subject: str, in_reply_to: str, msg_id: str,
                  sent: datetime, auto: bool = False) -> bytes:  # fmt: skip
    """One reply as `style`'s client writes it: top-posted over the quoted original."""
    email, first = sender
    original = _original_text(first)
    local = sent.astimezone(_paris(Policy()))
    attribution_date = f"{_DAYS_FR[local.weekday()]} {local.day} {_MONTHS_FR[local.month - 1]} {local.year} à {local:%H:%M}"
    msg = EmailMessage()
    msg["From"] = f"{first} <{email}>"
    msg["To"] = f"Programme de mentorat <{to}>"
    msg["Subject"] = ("Réponse automatique : " if auto else "RE: " if style.startswith("outlook") else "Re: ") + subject
    msg["Date"] = format_datetime(sent)
    msg["Message-ID"] = msg_id
    msg["In-Reply-To"] = in_reply_to
    msg["References"] = in_reply_to
    if auto:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg.set_content(f"Bonjour,\n\nJe suis absent(e) jusqu'au {local.day + 1 if local.day < 27 else 1}/{local.month:02d} "
                        "avec un accès limité à mes emails.\n\nCordialement,\n" + first)  # fmt: skip
        return msg.as_bytes()
    quoted = "\n".join(f"> {line}" if line else ">" for line in original.split("\n"))
    original_html = _html(original)
    if style == "gmail":
        msg["X-Mailer"] = "Gmail"
        msg.set_content(f"{body}\n\nLe {attribution_date}, Programme de mentorat <\n{to}> a écrit\u202f:\n\n{quoted}\n")
        msg.add_alternative(
            f'<div dir="ltr">{_html(body)}</div><br><div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
            f"Le {attribution_date}, Programme de mentorat &lt;{to}&gt; a écrit&nbsp;:<br></div>"
            f'<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex">'
            f"{original_html}</blockquote></div>",
            subtype="html",
        )
    elif style == "outlook":
        msg["X-Mailer"] = "Microsoft Outlook 16.0"
        header = (f"De : Programme de mentorat <{to}>\nEnvoyé : {attribution_date}\nÀ : {first} <{email}>\n"
                  f"Objet : {subject}")  # fmt: skip
        msg.set_content(f"{body}\n\nCordialement,\n{first}\n\n{header}\n\n{original}\n")
        msg.add_alternative(
            '<html><head><style>p.MsoNormal{margin:0cm;font-size:11.0pt;font-family:"Calibri",sans-serif}</style></head>'
            f"<body lang=FR><div class=WordSection1><p class=MsoNormal>{_html(body)}<o:p></o:p></p><p class=MsoNormal>&nbsp;</p>"
            "<div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>"
            f"<p class=MsoNormal><b>De&nbsp;:</b> Programme de mentorat &lt;{to}&gt;<br><b>Envoyé&nbsp;:</b> {attribution_date}<br>"
            f"<b>À&nbsp;:</b> {first}<br><b>Objet&nbsp;:</b> {_html_escape(subject)}</p></div></div>"
            f"<p class=MsoNormal>{original_html}</p></div></body></html>",
            subtype="html",
        )
    elif style == "outlook_web":
        msg["X-MS-Has-Attach"] = ""
        msg.set_content(
            f'<div style="font-family:Aptos,Arial,sans-serif;font-size:12pt">{_html(body)}</div><div id="appendonsend"></div>'
            '<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt">'
            f"<b>De :</b> Programme de mentorat &lt;{to}&gt;<br><b>Envoyé :</b> {attribution_date}<br><b>À :</b> {first}<br>"
            f"<b>Objet :</b> {_html_escape(subject)}</font><div>&nbsp;</div></div><div>{original_html}</div>",
            subtype="html",
        )
    elif style in ("apple", "iphone"):
        msg["X-Mailer"] = "iPhone Mail (21E236)" if style == "iphone" else "Apple Mail (2.3774.500.171.1.1)"
        sig = "\n\nEnvoyé de mon iPhone" if style == "iphone" else ""
        msg.set_content(f"{body}{sig}\n\n> Le {local.day} {_MONTHS_FR[local.month - 1]} {local.year} à {local:%H:%M}, "
                        f"Programme de mentorat <{to}> a écrit :\n>\n{quoted}\n")  # fmt: skip
        if style == "apple":
            msg.add_alternative(
                f'<html><body style="overflow-wrap: break-word;"><div>{_html(body)}</div><div><br><blockquote type="cite">'
                f"<div>Le {local.day} {_MONTHS_FR[local.month - 1]} {local.year} à {local:%H:%M}, Programme de mentorat "
                f"&lt;{to}&gt; a écrit :</div><br><div>{original_html}</div></blockquote></div></body></html>",
                subtype="html",
            )
    else:  # plain text, a webmail answering without HTML
        msg.set_content(f"{body}\n\n{first}\n\n----- Message d'origine -----\n{original}\n")
    return msg.as_bytes()


def replies(prog: Programme, secret: bytes, from_address: str, n: int, seed: int = 11) -> tuple[list[bytes], list[int]]:
    """`n` replies to the latest follow-up of `n` background active pairs; returns (raw messages, their pair ids)."""
    rng = random.Random(seed)
    signer = TokenSigner([secret])
    out, pair_ids = [], []
    for i, ap in enumerate(prog.active[:n]):
        role = rng.choice(("mentor", "mentee"))
        person_id, email, first = ap.mentor if role == "mentor" else ap.mentee
        oid, mid = ap.last_followup[role]
        token = signer.sign(TokenPurpose.REPLY, ap.pair_id, person_id, oid)
        style = rng.choice(_STYLES)
        _, body = rng.choices(_BODIES, weights=_WEIGHTS)[0]
        sent = prog.now - timedelta(minutes=rng.randint(5, 600))
        out.append(reply_message(
            style, body, sender=(email, first), to=plus_address(from_address, token), subject="Où en êtes-vous ?",
            in_reply_to=mid, msg_id=f"<{rng.getrandbits(80):020x}.{i}@{email.partition('@')[2]}>", sent=sent,
            auto=rng.random() < 0.05,
        ))  # fmt: skip
        pair_ids.append(ap.pair_id)
    return out, pair_ids


# ---- consistency check (the smoke test runs it) ---------------------------------------------


def check(engine: Engine, prog: Programme, policy: Policy, sample: int = 300) -> dict[str, int]:
    """Run `decide` on a sample: background pairs must owe nothing now, due pairs something.

    Returns counts of the pairs that break the rule (all zeros when the generator is consistent).
    """
    from sqlmodel import Session

    from mailflow.core.lifecycle import decide
    from mailflow.store import events_of, pair_view, people_by_id, to_event

    rng = random.Random(1)
    due = set(prog.due_ids)
    with Session(engine) as session:
        ids = [int(i) for i in session.connection().execute(select(Pair.id)).scalars()]  # type: ignore[call-overload]
        bad = {"background_owing": 0, "due_idle": 0, "next_due_mismatch": 0, "checked": 0}
        for pid in rng.sample(ids, min(sample, len(ids))):
            pair = session.get(Pair, pid)
            assert pair is not None
            people = people_by_id(session, (pair.mentor_id, pair.mentee_id, pair.referent_id))
            events = [to_event(r) for r in events_of(session, pid)]
            decision = decide(pair_view(pair, people), prog.now, events, policy)
            bad["checked"] += 1
            if pid in due:
                bad["due_idle"] += not decision.actions and decision.state.value == pair.state
            else:
                bad["background_owing"] += bool(decision.actions) or decision.state.value != pair.state
                bad["next_due_mismatch"] += decision.next_due_at != pair.next_due_at
    return bad
