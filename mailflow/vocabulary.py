"""Load an intent vocabulary TOML file into the plain `Vocabulary` the core classifies with."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mailflow.core.mail.intent import Answers, Vocabulary
from mailflow.core.model import EmailKind, Intent
from mailflow.errors import ConfigError

__all__ = ["Vocabulary", "load_vocabulary"]


def load_vocabulary(path: Path | None = None) -> Vocabulary:
    """Read `path` (default: the packaged mailflow/data/vocabulary.toml) into a Vocabulary."""
    try:
        if path is None:
            text = resources.files("mailflow").joinpath("data", "vocabulary.toml").read_text("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"vocabulary {path or 'default'}: {exc}") from exc
    try:
        return _build(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"vocabulary {path or 'default'}: invalid entry {exc}") from exc


def _build(data: dict[str, Any]) -> Vocabulary:
    phrases = {Intent(name): tuple(str(p) for p in patterns) for name, patterns in data.get("intents", {}).items()}
    codes = {str(code): Intent(value) for code, value in data.get("codes", {}).items()}
    answers = data.get("answers", {})
    context: dict[EmailKind | None, Answers] = {}
    for kind, entry in data.get("context", {}).items():
        key = None if kind == "default" else EmailKind(kind)
        context[key] = Answers(
            yes=Intent(entry["yes"]) if "yes" in entry else None,
            no=Intent(entry["no"]) if "no" in entry else None,
        )
    return Vocabulary(
        phrases=phrases,
        negations=tuple(str(w) for w in data.get("negation", {}).get("words", ())),
        codes=codes,
        yes_words=tuple(str(w) for w in answers.get("yes", ())),
        no_words=tuple(str(w) for w in answers.get("no", ())),
        max_answer_words=int(answers.get("max_words", 6)),
        context=context,
    )
