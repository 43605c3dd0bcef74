"""Start-up without garbage collection (shared by ``tether serve`` and its worker's late imports).

The imports and the settings allocate a server's long-lived objects (modules, classes), which no
collection can free, and a full collection of them costs about 30 ms here: a start ran a few,
50 ms of each start, which an upgrade in place pays twice (docs/benchmarks.md, issue 13). Frozen
afterwards, they are skipped by every later collection too (shorter pauses while serving).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """No garbage collection inside; what was made there is frozen when it ends well."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        if was_enabled:
            gc.enable()
        raise
    gc.freeze()
    if was_enabled:
        gc.enable()
