"""Signatures: HMAC-SHA512 over the exact bytes, a time window, rotation, clear reasons."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slayq.errors import ConfigError, InputError
from slayq.transport import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    secrets_from_env,
    sign,
    verify,
)
from slayq.transport.signing import ReplayGuard

SECRET = "s3cret-s3cret-s3cret-s3cret"
OTHER = "another-secret-entirely-0123"
BODY = b'{"event":"test/event","data":{"x":1}}'
NOW = 1_750_000_000.0


def reason_of(headers: dict[str, str], body: bytes = BODY, *, tolerance: float = 15.0) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(headers, body, [SECRET], now=NOW, tolerance=tolerance)
    return caught.value.reason


def test_a_signed_body_verifies() -> None:
    headers = sign(BODY, SECRET, now=NOW)
    assert set(headers) == {TIMESTAMP_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER}
    assert headers[TIMESTAMP_HEADER] == str(int(NOW))
    assert re.fullmatch(r"[0-9a-f]{32}", headers[DELIVERY_HEADER])
    assert re.fullmatch(r"[0-9a-f]{128}", headers[SIGNATURE_HEADER])
    verify(headers, BODY, [SECRET], now=NOW)


def test_the_signature_is_hmac_sha512_over_timestamp_delivery_id_and_exact_body() -> None:
    headers = sign(BODY, SECRET, now=NOW, delivery_id="d-1")
    message = f"{int(NOW)}.d-1.".encode() + BODY
    expected = hmac.new(SECRET.encode(), message, hashlib.sha512).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected


def test_every_signing_gets_a_new_delivery_id() -> None:
    assert sign(BODY, SECRET)[DELIVERY_HEADER] != sign(BODY, SECRET)[DELIVERY_HEADER]


def test_headers_are_matched_case_insensitively() -> None:
    headers = sign(BODY, SECRET, now=NOW)
    verify({k.lower(): v for k, v in headers.items()}, BODY, [SECRET], now=NOW)
    verify({k.upper(): v for k, v in headers.items()}, BODY, [SECRET], now=NOW)


def test_an_uppercase_hex_signature_verifies() -> None:
    headers = sign(BODY, SECRET, now=NOW)
    headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER].upper()
    verify(headers, BODY, [SECRET], now=NOW)


def test_a_tampered_body_is_rejected() -> None:
    headers = sign(BODY, SECRET, now=NOW)
    reason = reason_of(headers, BODY.replace(b"1", b"2"))
    assert "does not match" in reason


def test_a_reserialized_body_is_rejected() -> None:
    """Same JSON, other bytes: the signature covers bytes, not meaning."""
    headers = sign(BODY, SECRET, now=NOW)
    assert "does not match" in reason_of(headers, BODY.replace(b":", b": "))


def test_a_tampered_timestamp_is_rejected() -> None:
    headers = sign(BODY, SECRET, now=NOW)
    headers[TIMESTAMP_HEADER] = str(int(NOW) + 1)
    assert "does not match" in reason_of(headers)


def test_a_tampered_delivery_id_is_rejected() -> None:
    headers = sign(BODY, SECRET, now=NOW, delivery_id="abc")
    headers[DELIVERY_HEADER] = "abd"
    assert "does not match" in reason_of(headers)


def test_a_body_signed_with_another_secret_is_rejected() -> None:
    headers = sign(BODY, OTHER, now=NOW)
    assert "does not match" in reason_of(headers)


def test_an_old_timestamp_is_rejected_naming_the_past_and_the_seconds() -> None:
    headers = sign(BODY, SECRET, now=NOW - 16)
    reason = reason_of(headers)
    assert reason.startswith("timestamp is 16 s in the past; at most 15 s is accepted")


def test_a_future_timestamp_is_rejected_naming_the_future_and_the_seconds() -> None:
    headers = sign(BODY, SECRET, now=NOW + 16)
    reason = reason_of(headers)
    assert reason.startswith("timestamp is 16 s in the future; at most 15 s is accepted")


def test_timestamps_within_the_tolerance_verify() -> None:
    for skew in (-15, -1, 0, 1, 15):
        verify(sign(BODY, SECRET, now=NOW + skew), BODY, [SECRET], now=NOW)


def test_the_tolerance_can_be_widened() -> None:
    headers = sign(BODY, SECRET, now=NOW - 100)
    verify(headers, BODY, [SECRET], now=NOW, tolerance=120)
    assert "100 s in the past; at most 60 s" in reason_of(headers, tolerance=60)


def test_an_unsigned_old_request_learns_only_that_the_signature_is_wrong() -> None:
    headers = sign(BODY, OTHER, now=NOW - 3600)
    assert "does not match" in reason_of(headers)


def test_either_of_two_secrets_verifies_during_rotation() -> None:
    for secret in (SECRET, OTHER):
        verify(sign(BODY, secret, now=NOW), BODY, [OTHER, SECRET], now=NOW)
    with pytest.raises(SignatureError):
        verify(sign(BODY, "a-third-secret-nobody-has", now=NOW), BODY, [OTHER, SECRET], now=NOW)


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = sign(BODY, SECRET, now=NOW)
    del headers[missing]
    assert reason_of(headers) == f"missing header {missing}"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (TIMESTAMP_HEADER, "yesterday"),
        (TIMESTAMP_HEADER, "-5"),
        (TIMESTAMP_HEADER, "1.5"),
        (DELIVERY_HEADER, ""),
        (DELIVERY_HEADER, "a.b"),
        (DELIVERY_HEADER, "x" * 129),
        (SIGNATURE_HEADER, "zz" * 64),
        (SIGNATURE_HEADER, "ab" * 32),
    ],
)
def test_a_malformed_header_is_named(header: str, value: str) -> None:
    headers = sign(BODY, SECRET, now=NOW)
    headers[header] = value
    assert reason_of(headers).startswith(f"header {header} is malformed: expected ")


def test_no_reason_contains_the_secret_or_the_expected_signature() -> None:
    good = sign(BODY, SECRET, now=NOW)
    expected_signature = good[SIGNATURE_HEADER]
    cases = [
        ({**good, SIGNATURE_HEADER: "0" * 128}, BODY),
        (good, BODY + b" "),
        (sign(BODY, SECRET, now=NOW - 3600), BODY),
        (sign(BODY, SECRET, now=NOW + 3600), BODY),
        ({**good, SIGNATURE_HEADER: "not hex"}, BODY),
    ]
    for headers, body in cases:
        reason = reason_of(headers, body)
        assert SECRET not in reason
        assert expected_signature not in reason
        assert expected_signature[:16] not in reason


@given(body=st.binary(min_size=1, max_size=256), data=st.data())
def test_any_single_byte_change_of_the_body_is_rejected(body: bytes, data: st.DataObject) -> None:
    headers = sign(body, SECRET, now=NOW)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]), label="new byte")
    changed = body[:index] + bytes([new]) + body[index + 1 :]
    with pytest.raises(SignatureError, match="does not match"):
        verify(headers, changed, [SECRET], now=NOW)
    verify(headers, body, [SECRET], now=NOW)


@pytest.mark.parametrize("secrets", [[], [""], [SECRET, ""]])
def test_empty_secrets_are_refused_when_verifying(secrets: list[str]) -> None:
    with pytest.raises(ConfigError, match="secret"):
        verify(sign(BODY, SECRET, now=NOW), BODY, secrets, now=NOW)


def test_one_string_is_not_taken_for_a_list_of_one_character_secrets() -> None:
    with pytest.raises(ConfigError, match="not one string"):
        verify(sign(BODY, SECRET, now=NOW), BODY, SECRET, now=NOW)


def test_signing_with_an_empty_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        sign(BODY, "")


def test_signing_with_a_delivery_id_that_would_blur_the_message_is_refused() -> None:
    with pytest.raises(InputError, match="delivery id"):
        sign(BODY, SECRET, delivery_id="a.b")


# -- secrets from the environment ------------------------------------------------------


def test_secrets_from_env_reads_slay_q_secret() -> None:
    assert secrets_from_env({"SLAY_Q_SECRET": SECRET}) == [SECRET]


def test_secrets_from_env_reads_the_seeds_worker_secret_too() -> None:
    assert secrets_from_env({"SLAY_Q_WORKER_SECRET": SECRET}) == [SECRET]
    both = {"SLAY_Q_SECRET": SECRET, "SLAY_Q_WORKER_SECRET": OTHER}
    assert secrets_from_env(both) == [SECRET, OTHER]


def test_the_seeds_sample_secret_with_a_comma_is_one_secret() -> None:
    seed = 'G,4DgB$.?>X]"w}w1745Xq2nKoM4BG74'
    assert secrets_from_env({"SLAY_Q_SECRET": seed}) == [seed]


def test_previous_secrets_one_per_line_are_accepted_while_rotating() -> None:
    env = {"SLAY_Q_SECRET": SECRET, "SLAY_Q_PREVIOUS_SECRETS": f"{OTHER}\n\n{SECRET}\n"}
    assert secrets_from_env(env) == [SECRET, OTHER]


def test_no_secret_in_the_environment_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="set SLAY_Q_SECRET"):
        secrets_from_env({})


@pytest.mark.parametrize("value", ["", "   ", "short-secret"])
def test_empty_or_short_secrets_in_the_environment_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"SLAY_Q_SECRET: a secret is too short") as caught:
        secrets_from_env({"SLAY_Q_SECRET": value})
    if value.strip():
        assert value not in str(caught.value)


# -- the replay guard ----------------------------------------------------------------------


def test_the_replay_guard_refuses_a_delivery_id_seen_within_the_window() -> None:
    guard = ReplayGuard(tolerance=15.0)
    assert guard.first_sight({DELIVERY_HEADER: "a"}, NOW)
    assert guard.first_sight({DELIVERY_HEADER: "b"}, NOW + 1)
    assert not guard.first_sight({DELIVERY_HEADER.lower(): "a"}, NOW + 29)
    assert not guard.first_sight({DELIVERY_HEADER.upper(): " b "}, NOW + 30.5)


def test_the_replay_guard_forgets_an_id_once_its_signature_has_expired() -> None:
    guard = ReplayGuard(tolerance=15.0)
    assert guard.first_sight({DELIVERY_HEADER: "a"}, NOW)
    # A timestamp 15 s ahead stays valid for 30 s: the id is kept that long, then dropped.
    assert guard.first_sight({DELIVERY_HEADER: "a"}, NOW + 30)
    assert not guard.first_sight({DELIVERY_HEADER: "a"}, NOW + 31)


def test_the_replay_guard_holds_only_the_ids_of_its_window() -> None:
    guard = ReplayGuard(tolerance=15.0)
    for i in range(10_000):  # one id every 10 ms: 3,000 of them within any 30 s
        assert guard.first_sight({DELIVERY_HEADER: f"id-{i}"}, NOW + i / 100)
    assert len(guard) == 3_000
    assert not guard.first_sight({DELIVERY_HEADER: "id-9999"}, NOW + 100)
    assert guard.first_sight({DELIVERY_HEADER: "id-6999"}, NOW + 100)  # expired, forgotten
