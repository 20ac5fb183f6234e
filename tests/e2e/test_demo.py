"""`mailflow demo`: seven months through the real code paths, every kind, a browsable index, no personal data on the console."""

from __future__ import annotations

import html.parser
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailflow.core.model import EmailKind

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE = re.compile(r"(?:\+33\s?|\b0)[1-9](?:[\s.-]?\d{2}){4}\b|\+44\s?\d{4}\s?\d{6}")


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if tag == "a" and k == "href" and v]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo") / "sandbox"
    cwd = tmp_path_factory.mktemp("cwd")  # not the repo: the demo must not need config/mailflow.toml
    env = {"PATH": "/usr/bin:/bin", "MAILFLOW_DATABASE__URL": "sqlite:////nonexistent/should-be-ignored.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "mailflow", "demo", "--out", str(out)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return proc, out


def test_exits_zero_with_every_kind_in_the_timeline(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = demo
    assert proc.returncode == 0, proc.stderr
    sent = set(re.findall(r"(?:->|!!) (\w+)\s+to ", proc.stdout))
    assert sent == {k.value for k in EmailKind}
    for story in ("intent support_needed", "flag urgent (mentee, support_needed)", "intent stop", "mailflow pairs close",
                  "understood as auto_reply", "understood as bounce", "=> ended_no_contact", "flag rematch",
                  "referent command call_done P07: done", "=== mailflow stats ==="):  # fmt: skip
        assert story in proc.stdout, story


def test_urgent_alert_goes_out_in_the_pass_that_read_the_reply(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    lines = demo[0].stdout.splitlines()
    i = next(n for n, line in enumerate(lines) if "intent support_needed" in line)
    at = lines[i].split()[0]
    alert = next(line for line in lines[i:] if "!! urgent_alert" in line)
    assert alert.split()[0] == at


def test_no_address_or_phone_number_on_the_console(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = demo
    assert not EMAIL.findall(proc.stdout + proc.stderr)
    assert not PHONE.findall(proc.stdout + proc.stderr)


def test_index_links_every_email(demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = demo
    parser = _Links()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    assert len(parser.links) > 300
    assert all((out / link).is_file() for link in parser.links)
    emls = list((out / "emails").glob("*.eml"))
    assert {next(line for line in p.read_text(errors="replace").splitlines() if line.startswith("X-Mailflow-Kind:")).split()[1]
            for p in emls} == {k.value for k in EmailKind}  # fmt: skip
    assert list((out / "inbox").glob("*.eml"))
    assert (out / "mailflow.db").is_file()
