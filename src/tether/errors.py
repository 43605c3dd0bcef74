"""The exceptions of tether, under one root.

TetherError
├── ConfigError            invalid configuration (the CLI exits 2 naming the setting)
├── Refusal                a connection attempt refused with a close code and reason
│   └── InvalidParameter   4000: a query parameter is malformed (names it)
├── SpawnError             the shell could not be started
├── RecordError            a stored session record or tombstone cannot be read (names the field)
├── HandoverError          a hand-over from a previous server process cannot be read or made
├── RegistryUnavailable    Redis (the shared store and node registry) cannot be reached in time
├── MisuseError            the caller used an object in a way its state does not allow (a bug)
│   ├── IllegalTransition  a session event its state does not allow
│   ├── LocalProtocolError the client protocol driven out of order
│   └── PolicyError        the reconnection policy told of an event its state cannot have
└── ClientError            raised by the client library
    ├── SessionEnded       the session is gone for good (stop code: 4004, 4012, 4013, …)
    ├── ConnectFailed      a connect attempt failed (unreachable, timeout, retry code)
    ├── UnknownProject     the server does not offer the project asked for (a usage error)
    └── RemoteProtocolError the server broke the protocol (the client closes with 1002)

Two kinds of error, as h11 has them: ``MisuseError`` is a bug in the code that called tether;
``RemoteProtocolError`` and ``Refusal`` are a peer that misbehaved or was refused.
"""

from __future__ import annotations

from tether.protocol.codes import CloseCode, clip_reason


class TetherError(Exception):
    """Root of every error tether raises on purpose."""


class ConfigError(TetherError):
    """A setting is invalid; ``setting`` names it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class Refusal(TetherError):
    """A WebSocket connection refused by closing with ``code`` and a short ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = int(code)
        self.reason = clip_reason(reason)


class InvalidParameter(Refusal):
    """A query parameter is malformed: close 4000 with a reason naming the parameter."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(CloseCode.BAD_REQUEST, f"{parameter}: {message}")
        self.parameter = parameter


class MisuseError(TetherError, RuntimeError):
    """The caller used an object in a way its current state does not allow: a bug in the caller."""


class LocalProtocolError(MisuseError):
    """The client protocol was driven in a way its state does not allow."""


class PolicyError(MisuseError):
    """The caller reported an event the reconnection policy's state cannot have."""


class IllegalTransition(MisuseError):
    """An event the session's state does not allow: the caller misused the session (a bug).

    ``state`` and ``event`` are the names (enum values) of the state and the refused event.
    """

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"session event {event!r} is not allowed in state {state!r}")
        self.state = state
        self.event = event


class SpawnError(TetherError):
    """The shell could not be started (missing program, bad directory, no PTY left)."""


class OutOfResources(SpawnError):
    """The machine had no PTY, file descriptor or process left for a new shell: the server is
    full (1013), not broken (no start-failure breaker counts it)."""


class HandoverError(TetherError):
    """The state handed from one server process to the next (an upgrade's memfd, the
    file-descriptor store after a crash) is of an unknown version or malformed; or an upgrade
    was refused before anything was handed over (its pre-check failed). The old process keeps
    serving then."""


class RecordError(TetherError):
    """A session record or tombstone read from a store is malformed, or of a format version this
    tether does not know (a newer one wrote it). ``field`` names the culprit (None: the whole)."""

    def __init__(self, what: str, field: str | None, message: str) -> None:
        super().__init__(f"{what}: {field} {message}" if field else f"{what} {message}")
        self.what = what
        self.field = field
        self.message = message


class RegistryUnavailable(TetherError):
    """The shared store or cluster registry (Redis) did not answer: refused, reset or timed out.

    Raised instead of redis-py's ``ConnectionError``/``TimeoutError`` (the original is the
    ``__cause__``); what needs the registry is refused with a retry code (1013) meanwhile.
    """


class ClientError(TetherError):
    """Base of the client library's errors."""


class SessionEnded(ClientError):
    """The server closed with a stop code: the session cannot be resumed."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"session ended: {code} {reason}")
        self.code = code
        self.reason = reason


class ConnectFailed(ClientError):
    """One connection attempt failed before its hello."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class UnknownProject(ClientError):
    """The server does not offer ``project``: bad input (the CLI exits 2), not a failed run.

    The message names the projects it does offer (:func:`tether.client.problems.unknown_project`).
    """

    def __init__(self, message: str, project: str) -> None:
        super().__init__(message)
        self.project = project


class RemoteProtocolError(ClientError):
    """The server broke the protocol: the client closes with 1002 and ``reason``."""

    code = CloseCode.PROTOCOL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(f"protocol error: {message}")
        self.reason = clip_reason(message)
