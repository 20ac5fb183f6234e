"""A throwaway PostgreSQL cluster: initdb + pg_ctl in a temp dir, a free port, trust auth, no fsync.

initdb and postgres refuse to run as root: as root we run them as the `postgres` user (runuser)
and give it the directory. The unix socket goes to our dir (-k) so /var/run/postgresql is unused.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.support.ports import free_port

HOST = "127.0.0.1"


def _version_key(path: str) -> tuple[int, ...]:
    digits = Path(path).parent.name
    return tuple(int(x) for x in digits.split(".") if x.isdigit())


def postgres_bindir() -> str | None:
    """Directory holding initdb/pg_ctl: $PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    for bindir in reversed(candidates):
        if Path(bindir, "initdb").exists() and Path(bindir, "pg_ctl").exists():
            return bindir
    initdb = shutil.which("initdb")
    return str(Path(initdb).parent) if initdb else None


class PostgresCluster:
    """One cluster; port and data survive stop()/start()/restart()."""

    def __init__(self, base_dir: str | Path | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: run scripts/install-test-deps.sh")
        self.bindir = bindir
        self._own_dir = base_dir is None
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="mailflow-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.host = HOST
        self.port = free_port()
        self.user = "postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout_s: float = 60) -> None:
        cmd = [str(Path(self.bindir, args[0])), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{self.log_tail()}")

    def init(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip

    def start(self) -> None:
        self.init()
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={HOST} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        if not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])

    # -- databases --------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres") -> str:
        """libpq/psycopg connection string."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (psycopg v3 driver)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE (PostgreSQL 13+) ends sessions a test left open (e.g. an engine not disposed)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
