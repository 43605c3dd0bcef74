"""The output ring buffer of a session, addressed by absolute stream positions.

Output is one byte stream per session; positions count bytes from 0 at the session's start
(docs/protocol.md, section 3). The ring holds the most recent ``capacity`` bytes of it:
``tail <= position <= head``. Appending past the capacity drops the oldest bytes; a caller that
must know what was dropped (the mode tracker) passes ``on_evict``.

This is on the output hot path, so every copy is a slice copy (memoryview/bytearray), never a
per-byte loop, and storage grows geometrically with the bytes actually held instead of being
allocated up front: most sessions never fill their ring.
"""

from __future__ import annotations

from collections.abc import Callable

Evicted = Callable[[bytes], None]
BytesLike = bytes | bytearray | memoryview

# Smallest allocation: below this, growing by doubling would mean many tiny reallocations.
_MIN_ALLOCATION = 256  # an idle shell prints a prompt: keep idle sessions small


class RingBuffer:
    """A bounded byte ring with absolute positions.

    Not thread-safe; one session's event-loop callbacks own it.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._storage = bytearray()
        self._start = 0  # index in _storage of the oldest byte held
        self._size = 0
        self._head = 0

    @property
    def capacity(self) -> int:
        """The most bytes the ring holds."""
        return self._capacity

    @property
    def head(self) -> int:
        """Absolute position just after the last byte ever appended."""
        return self._head

    @property
    def tail(self) -> int:
        """Absolute position of the oldest byte still held (``head`` when empty)."""
        return self._head - self._size

    @property
    def size(self) -> int:
        """Bytes held: ``head - tail``."""
        return self._size

    @property
    def memory_bytes(self) -> int:
        """Bytes of storage allocated (at most ``capacity``, roughly twice ``size`` below it)."""
        return len(self._storage)

    @classmethod
    def restored(cls, capacity: int, head: int, held: BytesLike) -> RingBuffer:
        """A ring whose ``head`` is ``head`` and which holds ``held`` (the bytes just before it;
        only the last ``capacity`` are kept): a ring handed over from another process."""
        if len(held) > head:
            raise ValueError(f"{len(held)} bytes held cannot end at position {head}")
        ring = cls(capacity)
        ring.append(held)
        ring._head = head
        return ring

    def held(self) -> bytes:
        """Every byte held, from ``tail`` to ``head`` (what a hand-over carries)."""
        return self._copy_out(0, self._size) if self._size else b""

    def append(self, data: BytesLike, on_evict: Evicted | None = None) -> None:
        """Append ``data``; drop the oldest bytes beyond the capacity.

        ``on_evict``, if given, receives every dropped byte in stream order before it is lost —
        possibly in several calls, and including the leading part of ``data`` itself when
        ``data`` alone is larger than the capacity.
        """
        with memoryview(data) as view, view.cast("B") as chunk:
            if len(chunk) >= self._capacity:
                self._replace_all(chunk, on_evict)
            elif len(chunk):
                self._make_room(len(chunk), on_evict)
                self._write(chunk)
            self._head += len(chunk)

    def read(self, position: int, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes from absolute ``position``; ``b""`` at ``head``.

        Raises ValueError when ``position`` is outside ``[tail, head]`` (the bytes are gone or
        do not exist yet) or ``max_bytes`` is negative.
        """
        if not self.tail <= position <= self._head:
            raise ValueError(f"position {position} outside [{self.tail}, {self._head}]")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        offset = position - self.tail
        return self._copy_out(offset, min(max_bytes, self._size - offset))

    def clear(self) -> None:
        """Drop every byte held and release the storage; ``head`` stays where it is."""
        self._storage = bytearray()
        self._start = 0
        self._size = 0

    def _copy_out(self, offset: int, count: int) -> bytes:
        """``count`` bytes starting ``offset`` bytes after the tail, in one or two slice copies."""
        allocated = len(self._storage)
        begin = (self._start + offset) % allocated if allocated else 0
        first = min(count, allocated - begin)
        with memoryview(self._storage) as view:
            if first == count:
                return view[begin : begin + count].tobytes()
            return b"".join((view[begin:], view[: count - first]))

    def _evict(self, count: int, on_evict: Evicted | None) -> None:
        """Drop the ``count`` oldest bytes, handing them to ``on_evict`` first."""
        if on_evict is not None:
            on_evict(self._copy_out(0, count))
        self._start = (self._start + count) % len(self._storage)
        self._size -= count

    def _replace_all(self, chunk: memoryview, on_evict: Evicted | None) -> None:
        """``chunk`` fills the whole ring: everything held, and its own front, is dropped."""
        if self._size:
            self._evict(self._size, on_evict)
        overflow = len(chunk) - self._capacity
        if on_evict is not None and overflow:
            on_evict(chunk[:overflow].tobytes())
        if len(self._storage) != self._capacity:
            self._storage = bytearray(self._capacity)
        self._storage[:] = chunk[overflow:]
        self._start = 0
        self._size = self._capacity

    def _make_room(self, incoming: int, on_evict: Evicted | None) -> None:
        """Evict and grow so that ``incoming`` more bytes fit (``incoming < capacity``)."""
        overflow = self._size + incoming - self._capacity
        if overflow > 0:
            self._evict(overflow, on_evict)
        needed = self._size + incoming
        if needed > len(self._storage):
            self._grow(max(needed, 2 * len(self._storage), _MIN_ALLOCATION))

    def _grow(self, allocation: int) -> None:
        """Move the held bytes, unwrapped, into a larger storage."""
        allocation = min(allocation, self._capacity)
        grown = bytearray(allocation)
        grown[: self._size] = self._copy_out(0, self._size) if self._size else b""
        self._storage = grown
        self._start = 0

    def _write(self, chunk: memoryview) -> None:
        """Copy ``chunk`` after the newest byte; there is room for it."""
        allocated = len(self._storage)
        begin = (self._start + self._size) % allocated
        first = min(len(chunk), allocated - begin)
        self._storage[begin : begin + first] = chunk[:first]
        if first < len(chunk):
            self._storage[: len(chunk) - first] = chunk[first:]
        self._size += len(chunk)
