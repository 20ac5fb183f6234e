"""`python -m benchmarks` (`make bench BENCH_ARGS="--pairs 100000 --db both"`): figures, then `ratio NAME=VALUE` lines.

For each database: a programme of N/10 pairs and one of N pairs (the same ~3,300 due), the
lifecycle pass on both (pass_scaling); on the N-pair one the outbox against raw aiosmtplib into an
aiosmtpd sink in another process (send), the inbox against raw aioimaplib + stdlib parsing from a
throwaway Dovecot (inbox), and every referent's digest (digest_s). PostgreSQL and Dovecot are
throwaway instances on free loopback ports (tests/support); nothing on the machine is touched.
"""

from __future__ import annotations

import argparse
import functools
import math
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from benchmarks import figures as F
from benchmarks.generate import Spec, generate
from benchmarks.sink import SinkProcess

TARGETS = {"pass_scaling": ("<=", 1.5), "send": (">=", 0.7), "inbox": (">=", 0.5), "digest_s": ("<", 10.0), "peak_rss_mb": ("<", 300.0)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=100_000, help="pairs of the large programme (the small one has a tenth)")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each figure (median, min, max)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that every figure runs (smoke test)")
    p.add_argument("--due", type=int, default=3300, help="pairs due on the busy day (both programmes)")
    p.add_argument("--send", type=int, default=5000, help="emails for the send figure")
    p.add_argument("--replies", type=int, default=2000, help="replies for the inbox figure")
    p.add_argument("--referents", type=int, default=200)
    p.add_argument("--connections", type=int, default=4, help="SMTP connections (mailflow's max_connections and the raw sender's)")
    p.add_argument("--only", default="pass,send,inbox,digest", help="comma-separated subset of pass,send,inbox,digest")
    p.add_argument("--workdir", type=Path, default=None, help="where the SQLite files go (default: a temp dir, removed)")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.due, args.send, args.replies, args.referents = 300, 20, 30, 20, 10
    args.small = max(args.pairs // 10, args.due)
    return args


@contextmanager
def _database(kind: str, stack: ExitStack, workdir: Path, name: str) -> Iterator[str]:
    if kind == "sqlite":
        path = workdir / f"{name}.db"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    cluster = stack.enter_context(_postgres_cluster())
    db = cluster.create_database(f"bench_{name}")
    try:
        yield cluster.url(db)
    finally:
        cluster.drop_database(db)


_PG: Any = None


@contextmanager
def _postgres_cluster() -> Iterator[Any]:
    """One throwaway cluster for the whole run (started on first use)."""
    global _PG
    if _PG is None:
        from tests.support.postgres import PostgresCluster

        _PG = PostgresCluster()
        _PG.start()
    yield _PG


def _stop_postgres() -> None:
    global _PG
    if _PG is not None:
        _PG.close()
        _PG = None


def run(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the benchmark; print the figures to `out` (progress to `err`). Returns {name: Figure|float}."""
    args = parse_args(argv)
    only = set(args.only.split(","))
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}  (rss {_rss_mb():.0f} MB, peak {_peak_rss_mb():.0f} MB)", file=err, flush=True)

    def emit(fig: F.Figure) -> None:
        results[f"{fig.name}.{fig.db}"] = fig
        print(fig.line(), file=out, flush=True)

    results: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    with ExitStack() as stack:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailflow-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.workdir is None:
            stack.callback(shutil.rmtree, workdir, True)
        stack.callback(_stop_postgres)
        from tests.support.ports import free_port

        sink_port = free_port()
        if "send" in only:
            stack.enter_context(SinkProcess(sink_port))
        dovecot = None
        if "inbox" in only:
            from tests.support.dovecot import DovecotServer

            dovecot = DovecotServer()
            stack.callback(dovecot.close)
            dovecot.start()
        print(f"# mailflow benchmark: pairs={args.pairs} (and {args.small}), due={args.due}, referents={args.referents}, "
              f"repeat={args.repeat}, db={','.join(dbs)}", file=out, flush=True)  # fmt: skip
        _all_databases(dbs, args, only, stack, workdir, sink_port, dovecot, log, emit, ratios)
    ratios["peak_rss_mb"] = _peak_rss_mb()
    results["peak_rss_mb"] = ratios["peak_rss_mb"]
    print(f"{'all':<10} {'peak_rss_mb':<24} {ratios['peak_rss_mb']:10.1f} MB  (ru_maxrss of this process: generator, mailflow "
          "and the raw clients; Dovecot, PostgreSQL and the sink are other processes)", file=out)  # fmt: skip
    print(f"{'all':<10} {'wall_s':<24} {time.perf_counter() - t_start:10.1f} s", file=out)
    for name, value in ratios.items():
        print(f"ratio {name}={value:.3f}{_verdict(name, value)}", file=out, flush=True)
    results["ratios"] = ratios
    return results


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    """Resident set size now (Linux /proc; the peak where it is unavailable)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        return _peak_rss_mb()


def _verdict(name: str, value: float) -> str:
    base = name.rsplit("_", 1)[0] if name.endswith(("_sqlite", "_postgresql")) else name
    if base not in TARGETS or not math.isfinite(value):
        return ""
    op, target = TARGETS[base]
    ok = {"<=": value <= target, ">=": value >= target, "<": value < target}[op]
    return f"  (target {op} {target}: {'met' if ok else 'NOT met'})"


@contextmanager
def _programme(dbs: list[str], name: str, pairs: int, args: argparse.Namespace, stack: ExitStack, workdir: Path, sink_port: int,
               dovecot: Any, log: Callable[[str], None]) -> Iterator[tuple[dict[str, tuple[Any, Any]], Any]]:  # fmt: skip
    """One programme of `pairs` pairs in every database: {db: (engine, settings)} and the Programme.

    The generator computes the rows once and writes them into all the databases (the same ids,
    so the same Programme): with --db both, half the generation time.
    """
    from mailflow.adapters.db import make_engine, migrate

    with ExitStack() as local:
        built = {}
        for db in dbs:
            url = local.enter_context(_database(db, stack, workdir, f"{name}_{pairs}"))
            imap = None
            if dovecot is not None:
                user, password = dovecot.new_user()
                imap = (dovecot.host, dovecot.imap_port, user, password)
            engine = make_engine(url)
            local.callback(engine.dispose)  # before the database is dropped (LIFO)
            migrate(engine)
            built[db] = (engine, F.bench_settings(url, smtp_port=sink_port, connections=args.connections, imap=imap))
        spec = Spec(pairs=pairs, due=args.due, referents=args.referents, active_kept=max(args.send, args.replies))
        policy = next(iter(built.values()))[1].policy()
        engines = [engine for engine, _ in built.values()]
        prog = F.timed(f"{','.join(dbs)}: generate {pairs} pairs", lambda: generate(engines, spec, policy), log)
        log(f"rows {prog.rows} (each database)")
        yield built, prog


def _all_databases(dbs: list[str], args: argparse.Namespace, only: set[str], stack: ExitStack, workdir: Path, sink_port: int,
                   dovecot: Any, log: Callable[[str], None], emit: Callable[[F.Figure], None], ratios: dict[str, float]) -> None:  # fmt: skip
    where = (args, stack, workdir, sink_port, dovecot, log)
    small_figs: dict[str, F.Figure] = {}
    if "pass" in only:
        with _programme(dbs, "small", args.small, *where) as (built, prog):
            for db, (engine, settings) in built.items():
                small_figs[db] = F.timed(f"{db}: pass x{args.repeat} (N={args.small})",
                                         functools.partial(F.lifecycle_pass, engine, prog, settings, args.repeat, db), log)  # fmt: skip
                emit(small_figs[db])
    with _programme(dbs, "large", args.pairs, *where) as (built, prog):
        for db, (engine, settings) in built.items():
            _figures(db, engine, settings, prog, args, only, small_figs.get(db), log, emit, ratios)
            engine.dispose()  # its pooled connections are not needed by the next database's figures


def _figures(db: str, engine: Any, settings: Any, prog: Any, args: argparse.Namespace, only: set[str], small_fig: F.Figure | None,
             log: Callable[[str], None], emit: Callable[[F.Figure], None], ratios: dict[str, float]) -> None:  # fmt: skip
    """The figures of one database on the large programme."""
    if "pass" in only:
        fig = F.timed(f"{db}: pass x{args.repeat} (N={args.pairs})", lambda: F.lifecycle_pass(engine, prog, settings, args.repeat, db), log)
        emit(fig)
        assert small_fig is not None
        ratios[f"pass_scaling_{db}"] = fig.median / small_fig.median
    if "send" in only:
        figs = F.timed(f"{db}: send x{args.repeat}", lambda: F.send(engine, prog, settings, args.send, args.repeat, db), log)
        for fig in figs:
            emit(fig)
        ratios[f"send_{db}"] = figs[2].median
    if "inbox" in only:
        *figs, counts = F.timed(f"{db}: inbox x{args.repeat}", lambda: F.inbox(engine, prog, settings, args.replies, args.repeat, db), log)
        log(f"{db}: inbox outcomes {counts}")
        for fig in figs:
            emit(fig)
        ratios[f"inbox_{db}"] = figs[2].median
    if "digest" in only:
        fig = F.timed(f"{db}: digests x{args.repeat}", lambda: F.digests(engine, prog, settings, args.repeat, db), log)
        emit(fig)
        ratios[f"digest_s_{db}"] = fig.median


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
