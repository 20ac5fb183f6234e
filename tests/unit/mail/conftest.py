"""Fixtures for the inbound-mail reading tests."""

from __future__ import annotations

import pytest

from mailflow.core.mail.intent import Vocabulary
from mailflow.vocabulary import load_vocabulary


@pytest.fixture(scope="session")
def vocabulary() -> Vocabulary:
    return load_vocabulary()
