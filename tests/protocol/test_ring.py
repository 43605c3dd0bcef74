"""Tests of tether.protocol.ring: the output ring buffer with absolute positions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tether.protocol.ring import RingBuffer


def test_new_ring_is_empty_and_unallocated() -> None:
    ring = RingBuffer(1024 * 1024)
    assert (ring.head, ring.tail, ring.size, ring.capacity) == (0, 0, 0, 1024 * 1024)
    assert ring.memory_bytes == 0
    assert ring.read(0, 10) == b""


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError):
        RingBuffer(capacity)


def test_append_and_read_within_capacity() -> None:
    ring = RingBuffer(100)
    ring.append(b"hello ")
    ring.append(bytearray(b"world"))
    ring.append(memoryview(b"!"))
    assert (ring.head, ring.tail, ring.size) == (12, 0, 12)
    assert ring.read(0, 100) == b"hello world!"
    assert ring.read(6, 5) == b"world"
    assert ring.read(12, 5) == b""


def test_append_accepts_non_byte_memoryview() -> None:
    ring = RingBuffer(100)
    ring.append(memoryview(bytes(range(8))).cast("H"))
    assert ring.head == 8
    assert ring.read(0, 8) == bytes(range(8))


def test_overflow_drops_oldest_and_reports_them() -> None:
    evicted: list[bytes] = []
    ring = RingBuffer(8)
    ring.append(b"abcdef", evicted.append)
    ring.append(b"ghij", evicted.append)
    assert b"".join(evicted) == b"ab"
    assert (ring.head, ring.tail, ring.size) == (10, 2, 8)
    assert ring.read(2, 100) == b"cdefghij"


def test_data_larger_than_capacity_reports_its_own_front() -> None:
    evicted: list[bytes] = []
    ring = RingBuffer(4)
    ring.append(b"xy", evicted.append)
    ring.append(b"0123456789", evicted.append)
    assert b"".join(evicted) == b"xy012345"
    assert (ring.head, ring.tail) == (12, 8)
    assert ring.read(8, 10) == b"6789"


def test_data_exactly_capacity_replaces_everything() -> None:
    evicted: list[bytes] = []
    ring = RingBuffer(4)
    ring.append(b"ab", evicted.append)
    ring.append(b"wxyz", evicted.append)
    assert evicted == [b"ab"]
    assert ring.read(ring.tail, 4) == b"wxyz"


def test_wrapped_reads_are_contiguous() -> None:
    ring = RingBuffer(10)
    for index in range(7):
        ring.append(bytes([65 + index]) * 3)
    stream = b"".join(bytes([65 + index]) * 3 for index in range(7))
    assert ring.read(ring.tail, 10) == stream[-10:]
    assert ring.read(ring.tail + 3, 5) == stream[-7:-2]


def test_empty_append_changes_nothing() -> None:
    ring = RingBuffer(4)
    ring.append(b"", lambda _: pytest.fail("nothing to evict"))
    assert (ring.head, ring.memory_bytes) == (0, 0)


@pytest.mark.parametrize(("position", "max_bytes"), [(-1, 1), (4, 1), (1, 1), (2, -1)])
def test_read_outside_range_raises(position: int, max_bytes: int) -> None:
    ring = RingBuffer(2)
    ring.append(b"abc")  # holds positions 1..3
    if position == 1:
        ring.append(b"d")  # tail moves to 2: position 1 is gone
    with pytest.raises(ValueError):
        ring.read(position, max_bytes)


def test_memory_grows_lazily_up_to_capacity() -> None:
    ring = RingBuffer(1024 * 1024)
    ring.append(b"x" * 100)
    assert ring.memory_bytes <= 4096
    ring.append(b"x" * 100_000)
    assert 100_100 <= ring.memory_bytes <= 2 * 100_100
    for _ in range(40):
        ring.append(b"y" * 65536)
    assert ring.memory_bytes == ring.capacity


def test_clear_releases_storage_and_keeps_head() -> None:
    ring = RingBuffer(16)
    ring.append(b"abcdefghijklmnopqrs")
    ring.clear()
    assert (ring.head, ring.tail, ring.size, ring.memory_bytes) == (19, 19, 0, 0)
    ring.append(b"tu")
    assert ring.read(19, 10) == b"tu"


def test_large_stream_throughput_shape() -> None:
    # Not a benchmark: checks that 50 MiB in 16 KiB chunks goes through a 1 MiB ring intact.
    ring = RingBuffer(1 << 20)
    chunk = bytes(range(256)) * 64
    for _ in range(3200):
        ring.append(chunk)
    assert ring.head == 3200 * len(chunk)
    assert ring.read(ring.tail, 256) == bytes(range(256))


@settings(max_examples=300)
@given(
    st.integers(1, 64),
    st.lists(st.binary(max_size=100), max_size=30),
)
def test_reads_match_model(capacity: int, chunks: list[bytes]) -> None:
    ring = RingBuffer(capacity)
    evicted: list[bytes] = []
    for chunk in chunks:
        ring.append(chunk, evicted.append)
    model = b"".join(chunks)
    assert ring.head == len(model)
    assert ring.tail == max(0, len(model) - capacity)
    assert b"".join(evicted) == model[: ring.tail]
    for position in range(ring.tail, ring.head + 1):
        for max_bytes in (0, 1, 7, capacity):
            assert ring.read(position, max_bytes) == model[position : position + max_bytes]


class RingMachine(RuleBasedStateMachine):
    """Appends of random sizes against a model holding the whole stream."""

    ring: RingBuffer

    def __init__(self) -> None:
        super().__init__()
        self.model = b""
        self.evicted: list[bytes] = []
        self.cleared_at = 0

    @initialize(capacity=st.sampled_from([1, 2, 3, 7, 100, 5000, 10_000]))
    def make(self, capacity: int) -> None:
        self.ring = RingBuffer(capacity)

    @rule(data=st.binary(max_size=300))
    def append_small(self, data: bytes) -> None:
        self.ring.append(data, self.evicted.append)
        self.model += data

    @rule(size=st.integers(0, 12_000), fill=st.integers(0, 255))
    def append_large(self, size: int, fill: int) -> None:
        data = bytes([fill]) * size
        self.ring.append(data, self.evicted.append)
        self.model += data

    @rule(data=st.binary(max_size=300))
    def append_without_callback(self, data: bytes) -> None:
        # Bytes dropped without a callback are recorded by the model itself.
        old_tail, stream = self.ring.tail, self.model + data
        new_tail = max(self.cleared_at, len(stream) - self.ring.capacity)
        self.evicted.append(stream[old_tail:new_tail])
        self.ring.append(data)
        self.model = stream

    @rule()
    def clear(self) -> None:
        self.evicted.append(self.model[self.ring.tail :])
        self.ring.clear()
        self.cleared_at = len(self.model)

    @invariant()
    def positions_match_model(self) -> None:
        ring = self.ring
        assert ring.head == len(self.model)
        assert ring.tail == max(self.cleared_at, ring.head - ring.capacity)
        assert ring.size == ring.head - ring.tail
        assert b"".join(self.evicted) == self.model[: ring.tail]

    @invariant()
    def reads_match_model(self) -> None:
        ring = self.ring
        for position in {ring.tail, (ring.tail + ring.head) // 2, ring.head, ring.head - 1}:
            if ring.tail <= position <= ring.head:
                assert ring.read(position, 257) == self.model[position : position + 257]
        assert ring.read(ring.tail, ring.size) == self.model[ring.tail :]

    @invariant()
    def memory_is_bounded(self) -> None:
        ring = self.ring
        assert ring.memory_bytes <= ring.capacity
        assert ring.memory_bytes <= max(2 * ring.size, 4096) or ring.memory_bytes == ring.capacity


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
