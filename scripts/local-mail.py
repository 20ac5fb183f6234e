"""Local mail servers to try `mailflow run` by hand: a throwaway Dovecot (IMAP) and an aiosmtpd relay.

    .venv/bin/python scripts/local-mail.py          # needs Dovecot: bash scripts/install-test-deps.sh
    .venv/bin/python scripts/local-mail.py reply "Bonjour, on s'est appelés hier soir !"   # (2nd shell, env sourced)

Writes the MAILFLOW_* variables to source in another shell, then keeps both servers up (Ctrl-C or
SIGTERM stops them and deletes everything). Every email mailflow sends is kept by the relay and
copied into the mailbox's `Sent-Copies` folder, so any IMAP client can read it; a reply APPENDed to
INBOX (any IMAP client, or `DovecotServer.append`) is read by the daemon within seconds.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.dovecot import DovecotServer  # noqa: E402
from tests.support.smtp import RecordingSMTPServer  # noqa: E402


def main() -> int:
    dovecot = DovecotServer()
    dovecot.start()
    user, password = dovecot.new_user()
    smtp = RecordingSMTPServer()
    smtp.start()
    state = Path(dovecot.dir) / "mailflow-env.sh"
    state.write_text(
        f"export MAILFLOW_SMTP__HOST={smtp.host} MAILFLOW_SMTP__PORT={smtp.port}\n"
        f"export MAILFLOW_IMAP__HOST={dovecot.host} MAILFLOW_IMAP__PORT={dovecot.imap_port}\n"
        f"export MAILFLOW_IMAP__USERNAME={user} MAILFLOW_IMAP__PASSWORD={password}\n"
        "export MAILFLOW_SECURITY__SECRET=local-trial-secret-0123456789\n"
    )
    print(f"Dovecot IMAP on {dovecot.host}:{dovecot.imap_port} (user {user}), SMTP relay on {smtp.host}:{smtp.port}")
    print(f"In another shell:  source {state}")
    print("Ctrl-C stops both servers.", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    seen = 0
    try:
        while not stop:
            time.sleep(0.5)
            for received in smtp.messages[seen:]:
                kind = next((line.split(b":", 1)[1].strip().decode() for line in received.data.splitlines()
                             if line.lower().startswith(b"x-mailflow-kind:")), "?")  # fmt: skip
                dovecot.append(received.data, "Sent-Copies", user=user)
                print(f"relay: received one email, kind {kind}", flush=True)
            seen = len(smtp.messages)
    except KeyboardInterrupt:
        pass
    finally:
        smtp.stop()
        dovecot.close()
    return 0


def reply(text: str) -> int:
    """Answer the latest introduction in Sent-Copies as its recipient would (Gmail style), into INBOX."""
    import imaplib
    import os
    from datetime import UTC, datetime
    from email import policy
    from email.parser import BytesParser

    from mailflow.demo_personas import Say, write_reply

    client = imaplib.IMAP4(os.environ["MAILFLOW_IMAP__HOST"], int(os.environ["MAILFLOW_IMAP__PORT"]))
    client.login(os.environ["MAILFLOW_IMAP__USERNAME"], os.environ["MAILFLOW_IMAP__PASSWORD"])
    client.select("Sent-Copies")
    for num in reversed(client.search(None, "ALL")[1][0].split()):
        msg = BytesParser(policy=policy.default).parsebytes(client.fetch(num, "(RFC822)")[1][0][1])  # type: ignore[index]
        if msg["X-Mailflow-Kind"] == "introduction":
            raw = write_reply(msg, Say(text), msg["To"].addresses[0].addr_spec, "gmail", datetime.now(UTC))
            client.append("INBOX", None, None, raw)
            print("reply appended to INBOX; the daemon applies it within seconds (mailflow pairs list)")
            client.logout()
            return 0
    print("no introduction in Sent-Copies yet: start `mailflow run` first")
    return 1


if __name__ == "__main__":
    raise SystemExit(reply(sys.argv[2]) if sys.argv[1:2] == ["reply"] else main())
