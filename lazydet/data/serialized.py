"""A read-only list stored as one numpy byte buffer, for sharing dataset records with workers.

A Python list of dicts shared with forked DataLoader workers is not really shared: reading an
element touches its reference count, which writes to the page holding it, so every worker ends up
with a private copy of most of the list (copy-on-read). Storing each record pickled in one numpy
``uint8`` buffer, with an ``int64`` array of end offsets, leaves only two Python objects whose
pages workers never write, so the memory stays shared no matter how many workers read it.
"""

from __future__ import annotations

import contextlib
import ctypes
import pickle
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["SerializedList", "release_freed_heap_memory"]


class SerializedList(Sequence):
    """Immutable sequence of picklable objects; ``__getitem__`` unpickles a fresh copy.

    Args:
        items: the objects to store (consumed once).
    """

    def __init__(self, items: Iterable[Any]) -> None:
        chunks = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        self._ends = np.cumsum(
            np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        )
        self._buffer = np.frombuffer(b"".join(chunks), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self._ends)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a SerializedList of length {n}")
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(memoryview(self._buffer[start : int(self._ends[index])]))

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer and offsets."""
        return int(self._buffer.nbytes + self._ends.nbytes)


def release_freed_heap_memory() -> None:
    """Ask glibc to hand freed heap pages back to the OS (no-op elsewhere).

    After a large list of records is packed into a :class:`SerializedList` and dropped, glibc
    keeps most of the freed memory mapped (small blocks scattered over the heap), so the process
    still looks ~3x larger than the buffer; ``malloc_trim(0)`` returns those pages.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
