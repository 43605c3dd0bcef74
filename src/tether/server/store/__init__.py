"""Where sessions are registered: the in-memory store by default, Redis later.

The manager writes every session's serializable facts (:class:`~tether.server.session.SessionInfo`)
and every tombstone here, and reads tombstones back; live PTYs stay in the process that owns
them. A shared store (Redis) lets several nodes see one registry and a restarted process find
its sessions' facts; it implements the same :class:`SessionStore` interface.
"""

from tether.server.store.base import SessionStore, Tombstone
from tether.server.store.memory import MemoryStore

__all__ = ["MemoryStore", "SessionStore", "Tombstone"]
