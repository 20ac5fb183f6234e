"""What every command shares: settings, clock and database, loaded lazily with clear errors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import typer
from sqlalchemy import Engine

from mailflow.config import Settings, load_settings
from mailflow.errors import MailflowError


def fail(message: str, code: int = 1) -> NoReturn:
    for line in message.splitlines() or ["error"]:
        typer.echo(f"error: {line}", err=True)
    raise SystemExit(code)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@dataclass
class AppContext:
    config_path: Path | None
    now_text: str | None
    _engine: Engine | None = field(default=None, repr=False)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def now(self) -> datetime:
        from mailflow.clock import Clock, parse_now

        if self.now_text:
            return parse_now(self.now_text, self.settings.tz)
        return Clock().now()

    def engine(self, *, check: bool = True) -> Engine:
        from mailflow.adapters.db import check_schema, make_engine

        if self._engine is None:
            self._engine = make_engine(self.settings.database.url)
            if check:
                check_schema(self._engine)
        return self._engine


def ctx_of(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj


def guarded(func: Any) -> Any:
    """Map MailflowError to one clear line on stderr and exit 1 (no traceback for operator mistakes)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MailflowError as exc:
            fail(str(exc))
        except BrokenPipeError:
            sys.exit(0)

    return wrapper
