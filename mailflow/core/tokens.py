"""Signed reply/bounce tokens carried in plus-addresses (`local+TOKEN@domain`).

Layout (before URL-safe base64 without padding):
    1 byte   version (high nibble) | purpose code (low nibble)
    3 varints  pair id, person id, message (outbox) id  -- unsigned LEB128, minimal form
    12 bytes   HMAC-SHA256(secret, DOMAIN || the bytes above), truncated (96 bits)
A token for three ids below 2**21 is 30 characters. Tokens are case-sensitive (the contract
allows it). Only the canonical encoding verifies: a token differing by any character, including
the unused low bits of the last base64 character, is refused.
Secret rotation: sign with secrets[0], accept any of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from enum import StrEnum

_VERSION = 1
_MAC_BYTES = 12
_DOMAIN = b"mailflow-token-v1\x00"
_MAX_ID = 2**63 - 1


class TokenPurpose(StrEnum):
    REPLY = "r"  # Reply-To
    BOUNCE = "b"  # VERP envelope sender


_PURPOSE_CODE = {TokenPurpose.REPLY: 1, TokenPurpose.BOUNCE: 2}
_CODE_PURPOSE = {v: k for k, v in _PURPOSE_CODE.items()}


@dataclass(frozen=True)
class TokenClaims:
    purpose: TokenPurpose
    pair_id: int
    person_id: int
    message_id: int


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one minimal-form varint at `pos`; raise ValueError on anything else."""
    value, shift = 0, 0
    for i in range(pos, min(len(data), pos + 10)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > pos:
                raise ValueError("non-minimal varint")
            return value, i + 1
        shift += 7
    raise ValueError("truncated varint")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64encode(raw) != text:  # unused trailing bits set, or other non-canonical form
        raise ValueError("non-canonical base64")
    return raw


class TokenSigner:
    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or any(not isinstance(s, bytes) or len(s) < 16 for s in secrets):
            raise ValueError("TokenSigner needs at least one secret of 16 bytes or more")
        # HMAC keyed once per secret (and fed the domain prefix): each token then costs a copy and an update
        self._keyed = tuple(hmac.new(s, _DOMAIN, hashlib.sha256) for s in secrets)

    def _mac(self, keyed: hmac.HMAC, body: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(body)
        return mac.digest()[:_MAC_BYTES]

    def sign(self, purpose: TokenPurpose | str, pair_id: int, person_id: int, message_id: int) -> str:
        code = _PURPOSE_CODE[TokenPurpose(purpose)]
        ids = (pair_id, person_id, message_id)
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i <= _MAX_ID for i in ids):
            raise ValueError("token ids must be integers between 0 and 2**63-1")
        body = bytes([_VERSION << 4 | code]) + b"".join(_varint(i) for i in ids)
        return _b64encode(body + self._mac(self._keyed[0], body))

    def verify(self, token: str, purpose: TokenPurpose | str | None = None) -> TokenClaims | None:
        """The claims of a valid token (of `purpose`, when given); None for anything else."""
        try:
            claims = self._verify(token)
        except (ValueError, TypeError, binascii.Error, KeyError):
            return None
        if claims is None or (purpose is not None and claims.purpose != purpose):
            return None
        return claims

    def _verify(self, token: str) -> TokenClaims | None:
        if not isinstance(token, str) or not 20 <= len(token) <= 64 or not token.isascii():
            return None
        raw = _b64decode(token)
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        # compare against every secret (no early exit) so timing says nothing about which matched
        ok = False
        for keyed in self._keyed:
            ok |= hmac.compare_digest(self._mac(keyed, body), mac)
        if not ok or not body or body[0] >> 4 != _VERSION:
            return None
        purpose = _CODE_PURPOSE[body[0] & 0x0F]
        pos, ids = 1, []
        for _ in range(3):
            value, pos = _read_varint(body, pos)
            ids.append(value)
        if pos != len(body):
            return None
        return TokenClaims(purpose, ids[0], ids[1], ids[2])


def extract_token(address: str, from_address: str) -> str | None:
    """The TOKEN of `local+TOKEN@domain` when local/domain are those of `from_address`.

    The domain and our own local part compare case-insensitively; the token keeps its case.
    `address` may be bare or `Name <addr>`. Never raises.
    """
    try:
        addr = parseaddr(address)[1] or address.strip()
        local, _, domain = addr.rpartition("@")
        our_local, _, our_domain = from_address.strip().rpartition("@")
    except (AttributeError, TypeError, ValueError):
        return None
    if not our_local or domain.lower() != our_domain.lower():
        return None
    prefix = our_local + "+"
    if not local.lower().startswith(prefix.lower()):
        return None
    token = local[len(prefix) :]
    if not token or not all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in token):
        return None
    return token
