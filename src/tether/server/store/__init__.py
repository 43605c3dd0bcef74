"""Where sessions are registered: the in-memory store by default, Redis later.

A store holds every live session's :class:`SessionRecord` and every ended one's
:class:`Tombstone` for other processes to read (a restarted server, other nodes); live PTYs stay
in the process that owns them. The manager keeps its own facts in memory and mirrors them to the
store through a :class:`StoreWriter` (write-behind: see :mod:`tether.server.store.writer`).
Every implementation of :class:`SessionStore` passes the contract suite in
``tests/server/test_store.py``.
"""

from tether.server.store.base import SessionStore
from tether.server.store.memory import MemoryStore
from tether.server.store.record import RECORD_VERSION, SessionRecord, Tombstone
from tether.server.store.tombstones import TombstoneTable
from tether.server.store.writer import StoreWriter, WriterStatistics

__all__ = [
    "RECORD_VERSION",
    "MemoryStore",
    "SessionRecord",
    "SessionStore",
    "StoreWriter",
    "Tombstone",
    "TombstoneTable",
    "WriterStatistics",
]
