"""Authentication-Results: only our server's header counts; DMARC first, then DKIM/SPF."""

from __future__ import annotations

import pytest

from mailflow.core.mail.authres import sender_verified

MX = "mx.example.org"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([f"{MX}; dkim=pass header.d=gmail.com; spf=pass; dmarc=pass"], True),
        ([f"{MX}; dkim=none; spf=fail smtp.mailfrom=x; dmarc=fail"], False),
        ([f"{MX}; dkim=pass header.d=x; dmarc=fail"], False),
        ([f"{MX}; spf=pass smtp.mailfrom=x"], True),
        ([f"{MX}; spf=softfail; dkim=none"], False),
        (["evil.example; dmarc=pass", f"{MX}; dmarc=fail"], False),  # a forged header below ours is ignored
        (["evil.example; dmarc=pass"], None),
        ([], None),
        ([f"{MX.upper()}; dmarc=pass"], True),
    ],
)
def test_sender_verified(headers: list[str], expected: bool | None) -> None:
    assert sender_verified(headers, MX) is expected
