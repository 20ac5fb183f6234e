"""The demo sandbox: SQLite + the example roster (grows into the full accelerated programme year)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import typer
from sqlmodel import Session

from mailflow.adapters.db import make_engine, migrate
from mailflow.core.roster import parse_roster
from mailflow.importer import import_roster
from mailflow.queries import list_pairs
from mailflow.resources import example_roster


def run_demo(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    db = out / "mailflow.db"
    if db.exists():
        os.remove(db)
    engine = make_engine(f"sqlite:///{db.resolve()}")
    migrate(engine)
    rows = parse_roster(example_roster().read_bytes())
    result = import_roster(engine, rows, datetime.now(UTC))
    typer.echo(f"demo database {db}: imported {result.created} pairs")
    with Session(engine) as session:
        for pair in list_pairs(session):
            typer.echo(f"  {pair['ref']}  {pair['state']}  mentor {pair['mentor']['first_name']}  mentee {pair['mentee']['first_name']}")
