"""Identities of docs/protocol.md, section 1: project, client and session ids, and composite keys.

Session ids come in three kinds:

* **current format** ``session_{13-digit ms}_{6-32 of [a-z0-9]}``: used as is;
* **null-ish** (absent, empty, ``null``, ``undefined``, ``NaN`` in any case): "no id", the caller
  creates a fresh session — such values never name a shared session;
* **legacy** (1-128 of ``[A-Za-z0-9_.:-]``): migrated *deterministically* to a current-format id,
  so that an old client that keeps sending its legacy id reaches the same shell on any node and
  after any restart.

Everything else is refused with :class:`~tether.errors.InvalidParameter` (close 4000).
Pure functions: no I/O, no clock (the caller passes the time in).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from tether.errors import InvalidParameter

# Patterns use explicit ASCII classes: ``\d`` on str would also accept non-ASCII digits.
PROJECT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
SESSION_ID_RE = re.compile(r"session_[0-9]{13}_[a-z0-9]{6,32}")
LEGACY_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# The first run of exactly 13 digits: not preceded nor followed by another digit.
_TIMESTAMP_RUN = re.compile(r"(?<![0-9])[0-9]{13}(?![0-9])")
_NO_TIMESTAMP = "0000000000000"
_HASH_CHARS = 20
_RANDOM_CHARS = 24
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits
_NULLISH = frozenset({"", "null", "undefined", "nan"})
_PREVIEW_CHARS = 32
_PARAMETER = "session"


def is_valid_project_id(value: str) -> bool:
    """True when ``value`` is a well-formed project id (not whether it is configured)."""
    return PROJECT_ID_RE.fullmatch(value) is not None


def is_valid_client_id(value: str) -> bool:
    """True when ``value`` is a well-formed client id."""
    return CLIENT_ID_RE.fullmatch(value) is not None


def is_current_session_id(value: str) -> bool:
    """True when ``value`` is a session id in the current format (used as is, never migrated)."""
    return SESSION_ID_RE.fullmatch(value) is not None


def _random_token() -> str:
    return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(_RANDOM_CHARS))


def new_session_id(now_ms: int, token: Callable[[], str] | None = None) -> str:
    """A fresh current-format session id for the Unix time ``now_ms`` (milliseconds).

    The random part is 24 characters of ``[a-z0-9]`` from :mod:`secrets`; tests may inject
    ``token``. Raises ValueError when ``now_ms`` does not fit in 13 digits or the token makes an
    id that is not in the current format.
    """
    if not 0 <= now_ms <= 9_999_999_999_999:
        raise ValueError(f"timestamp out of range: {now_ms}")
    session_id = f"session_{now_ms:013d}_{(token or _random_token)()}"
    if not is_current_session_id(session_id):
        raise ValueError("token must be 6-32 characters of [a-z0-9]")
    return session_id


def is_nullish(raw: str | None) -> bool:
    """True for the values that mean "no session id": None, "", null, undefined, NaN (any case)."""
    return raw is None or raw.lower() in _NULLISH


def migrate_legacy_id(legacy: str, *, owner: str, project: str) -> str:
    """The current-format id a legacy value maps to, for this owner and project.

    ``session_{T}_{H}``: T is the first run of exactly 13 digits in ``legacy`` (else thirteen
    zeros), H the first 20 characters of the lowercase base32 of
    SHA-256(owner NUL project NUL legacy). Deterministic: same inputs, same id, everywhere.
    """
    found = _TIMESTAMP_RUN.search(legacy)
    timestamp = found.group(0) if found else _NO_TIMESTAMP
    material = "\0".join((owner, project, legacy)).encode("utf-8")
    digest = base64.b32encode(hashlib.sha256(material).digest()).decode("ascii").lower()
    return f"session_{timestamp}_{digest[:_HASH_CHARS]}"


@dataclass(frozen=True)
class SessionRef:
    """The session a connection names.

    ``session_id`` None means "no id": the caller creates a fresh session with a new id.
    ``legacy`` is the raw value the id was migrated from (for the hello), None when not migrated.
    """

    session_id: str | None
    legacy: str | None = None


def _preview(value: str) -> str:
    # Reasons travel in a 123-byte close frame and end up in logs: ASCII-escape and cut the
    # echoed value so that a huge or hostile input can neither overflow nor forge anything.
    shown = ascii(value[:_PREVIEW_CHARS])[1:-1]
    if len(value) > _PREVIEW_CHARS or len(shown) > _PREVIEW_CHARS:
        shown = shown[: _PREVIEW_CHARS - 3] + "..."
    return f"'{shown}'"


def _refuse(message: str) -> InvalidParameter:
    return InvalidParameter(_PARAMETER, message)


def _resolve_composite(raw: str, *, owner: str, project: str) -> SessionRef:
    inner, _, suffix = raw.rpartition(":")
    if suffix != project:
        raise _refuse(f"project mismatch in {_preview(raw)}")
    if not inner:
        raise _refuse("empty id before ':'")
    if is_nullish(inner):
        # "undefined:web" comes from an old client that had no id: it must not name a shell
        # shared by every such client, so it is treated as no id at all.
        return SessionRef(None, None)
    if is_current_session_id(inner):
        return SessionRef(inner, raw)
    return SessionRef(migrate_legacy_id(inner, owner=owner, project=project), raw)


def resolve_session_id(raw: str | None, *, owner: str, project: str) -> SessionRef:
    """Classify the ``session`` query parameter and map it to the id to look up.

    Null-ish → ``SessionRef(None, None)``; current format → as is; legacy → migrated, with
    ``legacy`` set to ``raw``. An old composite value ``<id>:<project>`` is split at its last
    ``:``; the part after must equal ``project``. Raises InvalidParameter (close 4000) for
    anything else, with a short reason that never echoes more than 32 characters of ``raw``.
    """
    if raw is None or is_nullish(raw):
        return SessionRef(None, None)
    if is_current_session_id(raw):
        return SessionRef(raw, None)
    if len(raw) > 128:
        raise _refuse(f"longer than 128 characters ({len(raw)})")
    if LEGACY_ID_RE.fullmatch(raw) is None:
        raise _refuse(f"invalid characters in {_preview(raw)}")
    if ":" in raw:
        return _resolve_composite(raw, owner=owner, project=project)
    return SessionRef(migrate_legacy_id(raw, owner=owner, project=project), raw)


def composite_key(session_id: str, project: str) -> str:
    """The key sessions are stored under: ``{session_id}:{project}``."""
    return f"{session_id}:{project}"


def split_key(key: str) -> tuple[str, str]:
    """``(session_id, project)`` of a composite key; ValueError unless both parts are valid."""
    session_id, colon, project = key.rpartition(":")
    if not colon or not is_current_session_id(session_id) or not is_valid_project_id(project):
        raise ValueError(f"malformed composite key: {_preview(key)}")
    return session_id, project
