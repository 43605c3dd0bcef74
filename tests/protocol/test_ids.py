"""Tests of tether.protocol.ids: docs/protocol.md, section 1."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.errors import InvalidParameter
from tether.protocol.codes import CloseCode
from tether.protocol.ids import (
    SessionRef,
    composite_key,
    is_current_session_id,
    is_nullish,
    is_valid_client_id,
    is_valid_project_id,
    migrate_legacy_id,
    new_session_id,
    resolve_session_id,
    split_key,
)

CURRENT = "session_1754900000000_k3j9x0a1b2c3d4e5f6g7"
LEGACY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
legacy_values = st.text(alphabet=LEGACY_ALPHABET, min_size=1, max_size=128)
plain_legacy = st.text(alphabet=LEGACY_ALPHABET.replace(":", ""), min_size=1, max_size=120)
projects = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)


def resolve(raw: str | None, owner: str = "alice", project: str = "web") -> SessionRef:
    return resolve_session_id(raw, owner=owner, project=project)


def expected_hash(owner: str, project: str, legacy: str) -> str:
    digest = hashlib.sha256(f"{owner}\0{project}\0{legacy}".encode()).digest()
    return base64.b32encode(digest).decode().lower()[:20]


# --- project and client ids -------------------------------------------------------------


@pytest.mark.parametrize("value", ["web", "a", "A.b_c-d", "0", "x" * 64])
def test_valid_project_ids(value: str) -> None:
    assert is_valid_project_id(value)


@pytest.mark.parametrize("value", ["", ".web", "-x", "_x", "x" * 65, "a/b", "we b", "wéb", "a\n"])
def test_invalid_project_ids(value: str) -> None:
    assert not is_valid_project_id(value)


@pytest.mark.parametrize("value", ["abcdefgh", "A_b-C_d-", "x" * 64])
def test_valid_client_ids(value: str) -> None:
    assert is_valid_client_id(value)


@pytest.mark.parametrize("value", ["", "abcdefg", "x" * 65, "abcdefg.", "abcdefgh\n"])
def test_invalid_client_ids(value: str) -> None:
    assert not is_valid_client_id(value)


def test_current_format_rejects_unicode_digits() -> None:
    assert not is_current_session_id("session_" + "١" * 13 + "_abcdef")


# --- new ids ----------------------------------------------------------------------------


def test_new_session_id_format() -> None:
    session_id = new_session_id(1754900000000)
    assert is_current_session_id(session_id)
    assert session_id.startswith("session_1754900000000_")
    assert len(session_id.rsplit("_", 1)[1]) == 24


def test_new_session_id_pads_timestamp_and_uses_token() -> None:
    assert new_session_id(42, token=lambda: "abcdef") == "session_0000000000042_abcdef"


def test_new_session_ids_differ() -> None:
    assert len({new_session_id(1754900000000) for _ in range(100)}) == 100


@pytest.mark.parametrize("now_ms", [-1, 10_000_000_000_000])
def test_new_session_id_rejects_out_of_range_time(now_ms: int) -> None:
    with pytest.raises(ValueError):
        new_session_id(now_ms)


@pytest.mark.parametrize("token", ["abc", "ABCDEF", "x" * 33, "abc-def"])
def test_new_session_id_rejects_bad_token(token: str) -> None:
    with pytest.raises(ValueError):
        new_session_id(1754900000000, token=lambda: token)


# --- null-ish ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "null", "NULL", "Null", "undefined", "UNDEFINED", "NaN"])
def test_nullish_values(raw: str | None) -> None:
    assert is_nullish(raw)
    assert resolve(raw) == SessionRef(None, None)


@pytest.mark.parametrize("raw", ["nul", "none", "0", " null", "nan1", "undefined_"])
def test_not_nullish(raw: str) -> None:
    assert not is_nullish(raw)


@given(st.sampled_from(["null", "undefined", "nan"]), st.data())
def test_nullish_any_case(word: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    variant = "".join(c.upper() if f else c for c, f in zip(word, flips, strict=True))
    assert resolve(variant) == SessionRef(None, None)


# --- current format and migration -------------------------------------------------------


def test_current_format_used_as_is() -> None:
    assert resolve(CURRENT) == SessionRef(CURRENT, None)


@pytest.mark.parametrize(
    "raw",
    ["session_123_abcdef", "session_1754900000000_abc", "session_1754900000000_ABCDEF"],
)
def test_near_current_values_are_migrated(raw: str) -> None:
    ref = resolve(raw)
    assert ref.legacy == raw
    assert ref.session_id is not None and is_current_session_id(ref.session_id)


def test_migration_matches_spec() -> None:
    legacy = "term-3"
    expected = f"session_0000000000000_{expected_hash('alice', 'web', legacy)}"
    assert migrate_legacy_id(legacy, owner="alice", project="web") == expected
    assert resolve(legacy) == SessionRef(expected, legacy)


@pytest.mark.parametrize(
    ("legacy", "timestamp"),
    [
        ("session-1754900000000-x1", "1754900000000"),
        ("a1754900000000b1111111111111", "1754900000000"),
        ("12345678901234-1754900000000", "1754900000000"),  # 14-digit run is skipped
        ("123456789012", "0000000000000"),
        ("12345678901234", "0000000000000"),
        ("550e8400-e29b-41d4-a716-446655440000", "0000000000000"),
        ("1111111111111.2222222222222", "1111111111111"),
    ],
)
def test_migration_timestamp_is_first_exact_13_digit_run(legacy: str, timestamp: str) -> None:
    migrated = migrate_legacy_id(legacy, owner="o", project="p")
    assert migrated == f"session_{timestamp}_{expected_hash('o', 'p', legacy)}"


# --- composite values -------------------------------------------------------------------


def test_composite_with_current_inner_id() -> None:
    raw = f"{CURRENT}:web"
    assert resolve(raw) == SessionRef(CURRENT, raw)


def test_composite_with_legacy_inner_id() -> None:
    raw = "term-3:web"
    migrated = migrate_legacy_id("term-3", owner="alice", project="web")
    assert resolve(raw) == SessionRef(migrated, raw)


def test_composite_splits_at_last_colon() -> None:
    raw = "a:b:web"
    migrated = migrate_legacy_id("a:b", owner="alice", project="web")
    assert resolve(raw) == SessionRef(migrated, raw)


def test_composite_project_mismatch_refused() -> None:
    with pytest.raises(InvalidParameter) as caught:
        resolve("term-3:other")
    assert caught.value.code == CloseCode.BAD_REQUEST
    assert caught.value.parameter == "session"
    assert "project mismatch" in caught.value.reason


@pytest.mark.parametrize("raw", [":web", "term-3:"])
def test_composite_empty_parts_refused(raw: str) -> None:
    with pytest.raises(InvalidParameter):
        resolve(raw)


@pytest.mark.parametrize("raw", ["null:web", "undefined:web", "NaN:web"])
def test_composite_with_nullish_inner_is_no_id(raw: str) -> None:
    assert resolve(raw) == SessionRef(None, None)


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["a b", "a/b", "térm", "a\x00b", "💥", "x" * 129, "é" * 10_000])
def test_invalid_values_refused_with_short_reason(raw: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        resolve(raw)
    reason = caught.value.reason
    assert reason.startswith("session: ")
    assert len(reason.encode()) < 100
    assert reason.isascii() and reason.isprintable()


def test_128_characters_accepted() -> None:
    assert resolve("x" * 128).legacy == "x" * 128


# --- composite keys ---------------------------------------------------------------------


def test_composite_key_round_trip() -> None:
    assert composite_key(CURRENT, "web") == f"{CURRENT}:web"
    assert split_key(f"{CURRENT}:web") == (CURRENT, "web")


@pytest.mark.parametrize(
    "key", ["", "web", f"{CURRENT}", f"{CURRENT}:", ":web", "term-3:web", f"{CURRENT}:.web"]
)
def test_split_key_rejects_malformed(key: str) -> None:
    with pytest.raises(ValueError):
        split_key(key)


# --- properties -------------------------------------------------------------------------


@given(legacy_values, st.text(max_size=20), projects)
def test_migration_deterministic_and_current_format(legacy: str, owner: str, project: str) -> None:
    first = migrate_legacy_id(legacy, owner=owner, project=project)
    assert first == migrate_legacy_id(legacy, owner=owner, project=project)
    assert is_current_session_id(first)


@given(plain_legacy, st.text(max_size=20), st.text(max_size=20), projects, projects)
def test_owner_project_and_value_each_change_the_hash(
    legacy: str, owner: str, other_owner: str, project: str, other_project: str
) -> None:
    base = migrate_legacy_id(legacy, owner=owner, project=project)
    if other_owner != owner:
        assert migrate_legacy_id(legacy, owner=other_owner, project=project) != base
    if other_project != project:
        assert migrate_legacy_id(legacy, owner=owner, project=other_project) != base
    assert migrate_legacy_id(legacy + "x", owner=owner, project=project) != base


@given(legacy_values, projects)
def test_legacy_charset_never_raises_except_on_project_mismatch(legacy: str, project: str) -> None:
    try:
        ref = resolve(legacy, project=project)
    except InvalidParameter as error:
        assert ":" in legacy
        inner, _, suffix = legacy.rpartition(":")
        assert suffix != project or not inner
        assert len(error.reason.encode()) < 100
        return
    if ref.session_id is not None:
        assert is_current_session_id(ref.session_id)


@given(plain_legacy, projects)
def test_plain_legacy_values_always_resolve(legacy: str, project: str) -> None:
    ref = resolve(legacy, project=project)
    assert ref.session_id is not None or is_nullish(legacy)


@given(plain_legacy, projects)
def test_composite_of_legacy_resolves_like_bare_value(legacy: str, project: str) -> None:
    if is_nullish(legacy):
        return
    bare = resolve(legacy, project=project)
    composite = resolve(f"{legacy}:{project}", project=project)
    assert composite.session_id == bare.session_id
    assert composite.legacy == f"{legacy}:{project}"


tokens = st.from_regex(r"[a-z0-9]{6,32}", fullmatch=True)


@given(st.integers(0, 9_999_999_999_999), tokens, projects)
def test_composite_key_round_trip_property(now_ms: int, token: str, project: str) -> None:
    session_id = new_session_id(now_ms, token=lambda: token)
    assert split_key(composite_key(session_id, project)) == (session_id, project)


@given(st.text(max_size=300))
def test_arbitrary_text_gives_ref_or_invalid_parameter(raw: str) -> None:
    try:
        ref = resolve(raw)
    except InvalidParameter as error:
        assert error.code == CloseCode.BAD_REQUEST
        assert len(error.reason.encode()) < 100
        return
    assert isinstance(ref, SessionRef)
    assert ref.session_id is None or is_current_session_id(ref.session_id)
