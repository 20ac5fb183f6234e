"""SMTP faults through the service (World + run_once): scripted replies at each step, and network faults
from the fault proxy. After the fault clears, every email is sent exactly once (one Message-ID per
email, each at the relay once), nothing is lost, and only a refusal of the recipient flags anyone."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from mailflow.adapters.tables import Flag, OutboxMessage, Person
from tests.support.faultproxy import FaultProxy
from tests.support.smtp import DROP, RecordingSMTPServer
from tests.support.world import World, pair_row

T0, T1, T2 = "2026-09-01T09:00", "2026-09-01T09:05", "2026-09-01T09:30"
AUTH = {"MAILFLOW_SMTP__USERNAME": "bot", "MAILFLOW_SMTP__PASSWORD": "pw"}
FAULTS: collections.Counter[str] = collections.Counter()  # printed at the end of the module


def make_world(tmp_path: Path, smtp: RecordingSMTPServer, **env: str) -> World:
    w = World(f"sqlite:///{tmp_path / 'smtp.db'}", smtp, None, **env)
    w.import_rows([pair_row(1), pair_row(2)])
    return w


def rows(world: World) -> list[OutboxMessage]:
    with Session(world.engine) as s:
        return list(s.exec(select(OutboxMessage).order_by(OutboxMessage.id)))  # type: ignore[arg-type]


def check_exactly_once(world: World, failed: int = 0) -> int:
    """Every row sent (but `failed`), each Message-ID at the relay exactly once, one Message-ID per row."""
    outbox = rows(world)
    assert sum(r.state == "failed" for r in outbox) == failed
    assert all(r.state in ("sent", "failed") for r in outbox), [(r.id, r.state) for r in outbox]
    at_relay = collections.Counter(m["Message-ID"] for m in world.sent())
    assert all(n == 1 for n in at_relay.values()), at_relay
    assert set(at_relay) == {r.message_id for r in outbox if r.state == "sent"}
    assert len({r.idem_key for r in outbox}) == len({r.message_id for r in outbox}) == len(outbox)
    return len(outbox)


def flags(world: World) -> list[tuple[str, str | None, str]]:
    with Session(world.engine) as s:
        return [(f.kind, f.who, f.reason) for f in s.exec(select(Flag))]


# (command, answer, extra env, expected first pass: sent/retried/failed/paused)
SCRIPTED = {
    "421 at greeting": ("CONNECT", "421 4.3.2 busy", {}, (3, 1, 0, False)),
    "421 at MAIL": ("MAIL", "421 4.3.2 closing", {}, (3, 1, 0, False)),
    "452 at RCPT": ("RCPT", "452 4.5.3 too many recipients", {}, (3, 1, 0, False)),
    "451 at DATA": ("DATA", "451 4.3.0 try later", {}, (3, 1, 0, False)),
    "drop at DATA": ("DATA", DROP, {}, (3, 1, 0, False)),
    "535 at AUTH": ("AUTH", "535 5.7.8 bad credentials", AUTH, (0, 0, 0, True)),
    "554 at DATA": ("DATA", "554 5.7.1 rejected", {}, (None, 0, 0, True)),
    "550 at RCPT": ("RCPT", "550 5.1.1 no such user", {}, (3, 0, 1, False)),
}


@pytest.mark.parametrize("case", list(SCRIPTED))
async def test_scripted_reply(case: str, tmp_path: Path, smtp_server_factory: Callable[..., RecordingSMTPServer]) -> None:
    command, answer, env, (sent, retried, failed, paused) = SCRIPTED[case]
    smtp = smtp_server_factory()
    world = make_world(tmp_path, smtp, MAILFLOW_SMTP__MAX_CONNECTIONS="1", **env)
    smtp.script(command, *[answer] * (3 if command == "AUTH" else 1))  # aiosmtplib tries each AUTH mechanism
    FAULTS[f"smtp {answer[:3]} at {command}"] += 1
    first = (await world.run_once(T0)).sent
    assert (first.retried, first.failed, bool(first.paused)) == (retried, failed, paused)
    if sent is not None:
        assert first.sent == sent
    if paused:  # the relay refuses US: rows stay pending untouched, nobody is flagged
        assert {r.state for r in rows(world)} == {"pending"} or first.sent
        assert all(r.attempts <= 1 for r in rows(world))
    second = (await world.run_once(T1)).sent
    assert second.paused is None
    n = check_exactly_once(world, failed=failed)
    assert n == 4
    if failed:  # 550: the recipient's address is refused for good -> bounce, call flag, mail held
        (bad,) = [r for r in rows(world) if r.state == "failed"]
        with Session(world.engine) as s:
            person = s.get(Person, bad.person_id)
            assert person is not None and person.bounced
        assert ("call", person.role, "bounce") in flags(world)
    else:
        assert [f for f in flags(world) if f[0] == "call"] == []


@pytest.fixture
def proxied(tmp_path: Path, smtp_server: RecordingSMTPServer) -> Iterator[tuple[World, FaultProxy]]:
    with FaultProxy(smtp_server.host, smtp_server.port) as proxy:
        world = make_world(tmp_path, smtp_server, MAILFLOW_SMTP__PORT=str(proxy.port), MAILFLOW_SMTP__TIMEOUT_S="1")
        yield world, proxy
    FAULTS.update({f"proxy {k} (smtp)": v for k, v in proxy.faults.items()})


async def test_slow_link_still_sends(proxied: tuple[World, FaultProxy]) -> None:
    world, proxy = proxied
    proxy.delay(0.2)
    assert (await world.run_once(T0)).sent.sent == 4
    assert proxy.faults["delay"] > 0
    check_exactly_once(world)


@pytest.mark.parametrize(
    "fault",
    ["blackhole", "refuse", "cut mid-DATA", "cut server reply", "slower than the timeout"],
)
async def test_network_fault_then_recovery(proxied: tuple[World, FaultProxy], fault: str) -> None:
    world, proxy = proxied
    {
        "blackhole": proxy.blackhole,
        "refuse": proxy.refuse,
        "cut mid-DATA": lambda: proxy.cut(after=700),  # EHLO+MAIL+RCPT+DATA are ~150 bytes; the message is ~5 KB
        "cut server reply": lambda: proxy.cut(after=120, direction="down"),  # inside the EHLO reply
        "slower than the timeout": lambda: proxy.delay(1.5),
    }[fault]()
    first = (await world.run_once(T0)).sent
    assert first.sent == 0 and first.retried == 4 and first.paused is None
    assert {r.state for r in rows(world)} == {"pending"}
    ids_before = {r.id: r.message_id for r in rows(world)}
    assert world.sent() == []  # a cut DATA never completes: the relay delivered nothing
    proxy.heal()
    second = (await world.run_once(T1)).sent
    assert second.sent == 4
    assert {r.id: r.message_id for r in rows(world)} == ids_before  # the same Message-IDs went out
    check_exactly_once(world)


async def test_lost_final_reply_resends_with_the_same_message_id(proxied: tuple[World, FaultProxy]) -> None:
    """The relay queued the email but its 250 never arrived: the documented resend, same Message-ID."""
    world, proxy = proxied
    proxy.lose_reply(b"queued as")
    first = (await world.run_once(T0)).sent
    assert first.sent == 0 and first.retried == 4
    assert len(world.sent()) == 4  # the relay has them all
    proxy.heal()
    assert (await world.run_once(T1)).sent.sent == 4
    at_relay = collections.Counter(m["Message-ID"] for m in world.sent())
    assert set(at_relay) == {r.message_id for r in rows(world)} and set(at_relay.values()) == {2}
    assert {r.state for r in rows(world)} == {"sent"}


async def test_backoff_grows_and_gives_up_after_horizon(proxied: tuple[World, FaultProxy]) -> None:
    world, proxy = proxied
    proxy.refuse()
    await world.run_once(T0)
    first_delay = {r.id: r.not_before for r in rows(world)}
    await world.run_once("2026-09-01T09:00:11")
    second_delay = {r.id: r.not_before for r in rows(world)}
    now = world.now("2026-09-01T09:00:11")
    assert all(10 <= (second_delay[i] - now).total_seconds() <= 21 for i in second_delay)  # 10 s, then 20 s
    assert all(second_delay[i] > first_delay[i] for i in first_delay)
    stats = (await world.run_once("2026-09-03T10:00")).sent  # past the 48 h horizon
    assert stats.failed == 4 and {r.state for r in rows(world)} == {"failed"}


def test_zz_report_fault_counts() -> None:
    print("\nSMTP faults injected:", dict(sorted(FAULTS.items())))
