"""Helpers to read the copied public corpora (tests never read /work/shared)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPORA = Path(__file__).resolve().parents[2] / "fixtures" / "corpora"


def corpus_files(folder: str) -> list[Path]:
    """Every message/body file of a corpus folder (labels, licenses and notes excluded)."""
    skip = {".json", ".md"}
    return sorted(p for p in (CORPORA / folder).rglob("*") if p.is_file() and p.suffix not in skip and p.name != "LICENSE")


def load_json(relative: str) -> Any:
    return json.loads((CORPORA / relative).read_text(encoding="utf-8"))


def same_text(got: str, expected: str) -> bool:
    """Equal up to line-end whitespace and surrounding blank lines."""

    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().split("\n"))

    return norm(got) == norm(expected)
