"""A throwaway Dovecot (IMAP, IMAPS, LMTP) in a temp dir on free loopback ports.

Recipe (measured on Debian 12, see docs in this module): the master runs as root with the
package's internal users (dovecot/dovenull); mail is stored as the stock `mail` user (uid 8),
hence `first_valid_uid = 8`. Without root, everything runs as the current user (no chroot).
`dovecot -F` keeps the master in the foreground so we own the process: stop = SIGTERM (~1 s).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import trustme

from tests.support.ports import free_port, port_open

HOST = "127.0.0.1"
DEFAULT_USERS = {"test": "secret", "other": "secret"}


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send sig to the process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


class DovecotServer:
    """One Dovecot instance. Ports stay the same across stop()/start()/restart()."""

    def __init__(self, base_dir: str | Path | None = None, ca: trustme.CA | None = None) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed: run scripts/install-test-deps.sh")
        self.binary = binary
        self._own_dir = base_dir is None
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="mailflow-dovecot-"))
        self.host = HOST
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.lmtp_port = free_port()
        self.users: dict[str, str] = dict(DEFAULT_USERS)
        self.ca = ca or trustme.CA()
        self.cafile = str(self.dir / "ca.pem")
        self.conf = self.dir / "dovecot.conf"
        self.log = self.dir / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    # -- setup ------------------------------------------------------------------------------
    def _write_files(self) -> None:
        self.dir.chmod(0o755)  # mkdtemp gives 0700: mail processes could not enter
        mail = self.dir / "mail"
        mail.mkdir(exist_ok=True)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.dir / "chain.pem"))
        (self.dir / "cert.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        self.ca.cert_pem.write_to_path(self.cafile)
        if os.geteuid() == 0:
            shutil.chown(mail, "mail", "mail")
            mail_user, users_block = "mail", "first_valid_uid = 8\n"
        else:  # non-root: every process runs as us, no chroot (measured recipe, see notes)
            mail_user = pwd.getpwuid(os.geteuid()).pw_name
            users_block = (
                f"first_valid_uid = {os.geteuid()}\n"
                f"default_internal_user = {mail_user}\ndefault_internal_group = {mail_user}\n"
                f"default_login_user = {mail_user}\n"
            )
        self._write_passwd()
        chroot = "" if os.geteuid() == 0 else "  chroot =\n"
        self.conf.write_text(
            f"""base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.log}
protocols = imap lmtp
listen = {HOST}
{users_block}auth_username_format = %Ln
# tests log in with wrong passwords on purpose: no 2 s failure delay, no per-IP auth penalty
# (the penalty is switched off by the anvil-auth-penalty listener below)
auth_failure_delay = 0
ssl = yes
ssl_cert = <{self.dir}/cert.pem
ssl_key = <{self.dir}/key.pem
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.dir}/passwd
}}
passdb {{
  driver = static
  args = password=secret
  username_filter = box*
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_user} home={mail}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
{chroot}  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
  }}
}}
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {self.lmtp_port}
  }}
}}
"""
        )

    def _write_passwd(self) -> None:
        # passwd-file is re-read by Dovecot when it changes: users can be added while running
        text = "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items())
        tmp = self.dir / "passwd.tmp"
        tmp.write_text(text)
        tmp.replace(self.dir / "passwd")

    def new_user(self) -> tuple[str, str]:
        """A fresh user with an empty mailbox (isolates tests sharing one server).

        Any name starting with `box` logs in with password `secret` (a static passdb restricted
        by username_filter): passwd-file edits are not picked up reliably while Dovecot runs.
        """
        name = f"box{uuid.uuid4().hex[:12]}"
        self.users[name] = "secret"
        return name, "secret"

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> None:
        if self.running:
            return
        stderr = open(self.dir / "dovecot.stderr", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # own process group: stop() can end the children too
        )
        stderr.close()
        deadline = time.monotonic() + timeout_s
        ports = (self.imap_port, self.imaps_port, self.lmtp_port)
        while not all(port_open(p) for p in ports):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not start:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the master AND every child, like a real server going down.

        SIGTERM to the `-F` master alone leaves logged-in imap processes running (measured):
        clients would keep working on a "stopped" server. So the whole process group goes.
        """
        if self.proc is None:
            return
        group = self.proc.pid
        _signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            self.proc.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while _signal_group(group, 0):  # children still exiting
            if time.monotonic() > deadline:
                _signal_group(group, signal.SIGKILL)
            time.sleep(0.02)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the directory (when we created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        parts = []
        for path in (self.log, self.dir / "dovecot.stderr"):
            if path.exists():
                parts.extend(path.read_text(errors="replace").splitlines()[-n:])
        return "\n".join(parts)

    # -- helpers for test setup (stdlib, synchronous) -------------------------------------------
    def _login(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=15)
        client.login(user, self.users[user])
        return client

    def append(self, raw: bytes, folder: str = "INBOX", user: str = "test") -> int:
        """APPEND raw to folder (created when missing); return the new UID."""
        client = self._login(user)
        try:
            if folder.upper() != "INBOX":
                client.create(folder)  # NO [ALREADYEXISTS] is fine
            typ, data = client.append(folder, None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {folder} failed: {data!r}")
            match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(match.group(1)) if match else 0
        finally:
            client.logout()

    def list_folder(self, folder: str = "INBOX", user: str = "test") -> list[bytes]:
        """Raw messages in folder, in UID order ([] when the folder does not exist)."""
        client = self._login(user)
        try:
            typ, _ = client.select(folder, readonly=True)
            if typ != "OK":
                return []
            _, data = client.uid("SEARCH", "ALL")
            uids = (data[0] or b"").split()
            out = []
            for uid in uids:
                _, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
                out.extend(part[1] for part in fetched if isinstance(part, tuple))
            return out
        finally:
            client.logout()

    def folders(self, user: str = "test") -> list[str]:
        client = self._login(user)
        try:
            _, data = client.list()
            names = [re.search(rb'"[^"]*" (.*)$', line) for line in data if line]
            return [m.group(1).decode().strip('"') for m in names if m]
        finally:
            client.logout()

    def lmtp_deliver(self, raw: bytes, rcpt: str = "test", mail_from: str = "") -> None:
        """Deliver like an MTA would (LMTP), e.g. to test IDLE on real deliveries."""
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=15) as lmtp:
            lmtp.sendmail(mail_from, [rcpt], raw)
