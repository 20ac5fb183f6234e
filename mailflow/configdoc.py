"""Generate the commented config file and the configuration reference from the settings model (no drift)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from mailflow.config import Settings

HEADER = """\
# mailflow configuration. Every setting is shown with its default; delete a line to keep the default.
# Every setting can be overridden by the environment: MAILFLOW_<SECTION>__<KEY>, e.g.
# MAILFLOW_SMTP__HOST, MAILFLOW_DATABASE__URL. Secrets: prefer the env or the *_file settings.
# Generated from the settings model by `python -m mailflow.configdoc`; docs/configuration.md too.
"""


def _toml_value(value: Any) -> str | None:
    if value is None or isinstance(value, SecretStr):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.time):
        return json.dumps(value.strftime("%H:%M"))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v) for v in value]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _sections() -> list[tuple[str, type[BaseModel], BaseModel]]:
    defaults = Settings.model_construct()
    return [(name, type(getattr(defaults, name)), getattr(defaults, name)) for name in Settings.model_fields]


def render_toml() -> str:
    out = [HEADER]
    for name, cls, default in _sections():
        out.append(f"\n[{name}]  # {(cls.__doc__ or '').strip()}")
        for key, field in cls.model_fields.items():
            out.append(f"# {field.description}")
            value = _toml_value(getattr(default, key))
            out.append(f"{key} = {value}" if value is not None else f"# {key} = ")
    return "\n".join(out) + "\n"


def render_markdown() -> str:
    out = ["# Configuration reference", "", "Generated from the settings model (`mailflow/config.py`) by",
           "`python -m mailflow.configdoc`; a test fails when it drifts.", "",
           "File: `--config PATH`, else `$MAILFLOW_CONFIG`, else `config/mailflow.toml` when present, else defaults.",
           "Every key can be set from the environment as `MAILFLOW_<SECTION>__<KEY>` (upper case).", ""]  # fmt: skip
    for name, cls, default in _sections():
        out += [f"## [{name}]", "", (cls.__doc__ or "").strip(), "", "| key | env | default | meaning |", "|---|---|---|---|"]
        for key, field in cls.model_fields.items():
            value = _toml_value(getattr(default, key))
            shown = "(secret)" if isinstance(getattr(default, key), SecretStr) else (value if value is not None else "(unset)")
            env = f"MAILFLOW_{name.upper()}__{key.upper()}"
            out.append(f"| `{key}` | `{env}` | `{shown}` | {field.description} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    (root / "config" / "mailflow.toml").write_text(render_toml(), encoding="utf-8")
    (root / "docs" / "configuration.md").write_text(render_markdown(), encoding="utf-8")


if __name__ == "__main__":
    main()
