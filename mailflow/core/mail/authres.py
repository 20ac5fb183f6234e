"""Did our own mail server vouch for the sender? (RFC 8601 Authentication-Results)

Only the header stamped by our receiving server counts (its authserv-id is configured): anyone
can write an Authentication-Results header into a forged message, but our server adds its own
on top. A sender passes when DMARC passes, or when DKIM or SPF passes and DMARC did not fail.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_RESULT = re.compile(r"\b(dmarc|dkim|spf)\s*=\s*([a-z]+)", re.I)


def sender_verified(headers: Sequence[str], authserv_id: str) -> bool | None:
    """True/False from the first header of `authserv_id`; None when there is none (nothing to say)."""
    wanted = authserv_id.strip().lower()
    for header in headers:
        served_by = header.split(";", 1)[0].strip().split()[0].lower() if header.strip() else ""
        if served_by != wanted:
            continue
        results: dict[str, set[str]] = {}
        for method, result in _RESULT.findall(header):
            results.setdefault(method.lower(), set()).add(result.lower())
        if "pass" in results.get("dmarc", set()):
            return True
        if "fail" in results.get("dmarc", set()):
            return False
        return "pass" in results.get("dkim", set()) or "pass" in results.get("spf", set())
    return None
