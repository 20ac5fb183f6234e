"""Where the shipped files are: the repo's top-level folders, or their copies inside an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """`templates` or `config`: the source checkout's folder, else the wheel's `mailflow/_<name>`."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / f"_{name}"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mailflow's {name} folder is missing from this installation")
