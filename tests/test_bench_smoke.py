"""The benchmark code, run with tiny sizes on SQLite so that it cannot rot. No timing is asserted:
only that every figure is produced and finite, and that the generated programme is consistent
(background pairs owe nothing at `now`, due pairs owe something)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.support.dovecot import dovecot_binary


def test_generator_is_consistent_with_the_lifecycle(tmp_path: Path) -> None:
    from benchmarks.generate import Spec, check, generate
    from mailflow.adapters.db import make_engine, migrate
    from mailflow.core.policy import Policy

    engine = make_engine(f"sqlite:///{tmp_path / 'gen.db'}")
    migrate(engine)
    prog = generate(engine, Spec(pairs=400, due=60, referents=8), Policy(), chunk=150)
    assert len(prog.due_ids) == 60 and prog.rows["pairs"] == 400 and prog.active
    bad = check(engine, prog, Policy(), sample=400)
    engine.dispose()
    assert bad == {"background_owing": 0, "due_idle": 0, "next_due_mismatch": 0, "checked": 400}


@pytest.mark.timeout(300)
def test_quick_benchmark_produces_every_figure(tmp_path: Path) -> None:
    if dovecot_binary() is None:
        missing("dovecot (dovecot-imapd, dovecot-lmtpd)")
    from benchmarks.__main__ import run

    out, err = io.StringIO(), io.StringIO()
    results = run(["--quick", "--db", "sqlite", "--repeat", "1", "--workdir", str(tmp_path)], out=out, err=err)
    text = out.getvalue()
    for name in ("pass_s[N=30]", "pass_s[N=300]", "send_mailflow", "send_raw_aiosmtplib", "inbox_mailflow",
                 "inbox_raw_aioimaplib", "digest_s", "peak_rss_mb"):  # fmt: skip
        assert name in text, text
    ratios = results["ratios"]
    assert set(ratios) == {"pass_scaling_sqlite", "send_sqlite", "inbox_sqlite", "digest_s_sqlite", "peak_rss_mb"}
    assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios
    for name in ratios:
        assert f"ratio {name}=" in text
    assert text.rstrip().splitlines()[-1].startswith("ratio ")
