"""Signed reply/bounce tokens and plus-addresses."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailflow.core.addresses import UnsafeHeaderError, plus_address
from mailflow.core.tokens import TokenClaims, TokenPurpose, TokenSigner, extract_token

SECRET = b"s" * 32
OLD = b"o" * 32
FROM = "mentorat@example.org"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner([SECRET])


def test_round_trip(signer: TokenSigner) -> None:
    token = signer.sign(TokenPurpose.REPLY, 12, 34, 5678)
    assert signer.verify(token) == TokenClaims(TokenPurpose.REPLY, 12, 34, 5678)
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")


@given(
    purpose=st.sampled_from(list(TokenPurpose)),
    ids=st.tuples(*[st.integers(0, 2**63 - 1)] * 3),
)
def test_round_trip_any_ids(purpose: TokenPurpose, ids: tuple[int, int, int]) -> None:
    signer = TokenSigner([SECRET])
    token = signer.sign(purpose, *ids)
    assert signer.verify(token) == TokenClaims(purpose, *ids)
    assert len(token) <= 64


def test_local_part_fits_for_realistic_ids(signer: TokenSigner) -> None:
    token = signer.sign("b", 10**6, 10**7, 10**9)
    address = plus_address("mailflow-mentorat@example.org", token)
    assert len(address.split("@")[0]) < 64


def test_every_single_char_change_fails(signer: TokenSigner) -> None:
    token = signer.sign(TokenPurpose.REPLY, 7, 8, 9)
    alphabet = string.ascii_letters + string.digits + "-_"
    for i, original in enumerate(token):
        for ch in alphabet:
            if ch != original:
                assert signer.verify(token[:i] + ch + token[i + 1 :]) is None, (i, ch)


def test_case_matters(signer: TokenSigner) -> None:
    token = signer.sign(TokenPurpose.REPLY, 7, 8, 9)
    assert signer.verify(token.lower()) is None or token.lower() == token
    assert signer.verify(token.upper()) is None or token.upper() == token


@pytest.mark.parametrize("garbage", ["", "x", "a" * 30, "a" * 200, "!!!!", "é" * 30, None, 12, "====", "AAAA" * 8])
def test_garbage_is_none(signer: TokenSigner, garbage: object) -> None:
    assert signer.verify(garbage) is None  # type: ignore[arg-type]


def test_truncated_and_extended_fail(signer: TokenSigner) -> None:
    token = signer.sign(TokenPurpose.REPLY, 7, 8, 9)
    assert signer.verify(token[:-1]) is None
    assert signer.verify(token + "A") is None
    assert signer.verify(token[1:]) is None


def test_rotation(signer: TokenSigner) -> None:
    old_token = TokenSigner([OLD]).sign(TokenPurpose.REPLY, 1, 2, 3)
    rotated = TokenSigner([SECRET, OLD])
    assert rotated.verify(old_token) == TokenClaims(TokenPurpose.REPLY, 1, 2, 3)
    new_token = rotated.sign(TokenPurpose.REPLY, 1, 2, 3)
    assert signer.verify(new_token) is not None  # signed with secrets[0]
    assert TokenSigner([OLD]).verify(new_token) is None
    assert signer.verify(old_token) is None  # a secret dropped from the list no longer verifies


def test_wrong_secret_fails(signer: TokenSigner) -> None:
    assert TokenSigner([b"x" * 32]).verify(signer.sign("r", 1, 2, 3)) is None


def test_wrong_purpose_fails(signer: TokenSigner) -> None:
    bounce = signer.sign(TokenPurpose.BOUNCE, 1, 2, 3)
    assert signer.verify(bounce, purpose=TokenPurpose.REPLY) is None
    assert signer.verify(bounce, purpose="b") == TokenClaims(TokenPurpose.BOUNCE, 1, 2, 3)
    assert signer.sign("r", 1, 2, 3) != bounce


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, True, "1"])
def test_sign_rejects_bad_ids(signer: TokenSigner, bad: object) -> None:
    with pytest.raises(ValueError):
        signer.sign(TokenPurpose.REPLY, bad, 1, 1)  # type: ignore[arg-type]


def test_signer_needs_a_real_secret() -> None:
    with pytest.raises(ValueError):
        TokenSigner([])
    with pytest.raises(ValueError):
        TokenSigner([b"short"])


def test_plus_address_and_extract(signer: TokenSigner) -> None:
    token = signer.sign(TokenPurpose.REPLY, 1, 2, 3)
    address = plus_address(FROM, token)
    assert address == f"mentorat+{token}@example.org"
    assert extract_token(address, FROM) == token
    assert extract_token(f"mentorat+{token}@EXAMPLE.ORG", FROM) == token
    assert extract_token(f'"Programme" <{address}>', FROM) == token
    assert extract_token(f"mentorat+{token}@other.org", FROM) is None
    assert extract_token(f"other+{token}@example.org", FROM) is None
    assert extract_token("mentorat@example.org", FROM) is None
    assert extract_token("mentorat+@example.org", FROM) is None
    assert extract_token("garbage", FROM) is None
    assert extract_token(f"mentorat+{token}@example.org", "garbage") is None


def test_extract_with_plus_in_from_address(signer: TokenSigner) -> None:
    token = signer.sign(TokenPurpose.BOUNCE, 1, 2, 3)
    base = "mentorat+prod@example.org"
    assert extract_token(plus_address(base, token), base) == token


@pytest.mark.parametrize("token", ["", "a b", "a\r\nBcc: x", "a@b", "é"])
def test_plus_address_rejects_unsafe_tokens(token: str) -> None:
    with pytest.raises(UnsafeHeaderError):
        plus_address(FROM, token)


def test_plus_address_rejects_overlong_local_part() -> None:
    with pytest.raises(UnsafeHeaderError):
        plus_address("a" * 40 + "@example.org", "b" * 30)
