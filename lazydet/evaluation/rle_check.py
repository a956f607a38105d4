"""Many compressed COCO RLE strings checked at once: do their runs cover their masks exactly?

``lazydet.data.rle.check_compressed_rles`` answers the same question and says which mask fails;
this is the fast yes/no for a detector's 100k masks (a few passes over the text, ~3x faster):
the results check of ``coco_evaluate`` asks it first and, on "no", asks the other for the index
and the message. ``tests/evaluation/test_rle_check.py`` holds the two to the same answer on
random masks and on corrupted strings.

The format (``rleFrString`` in pycocotools' ``maskApi.c``): a value is 1-6 chunks of 5 bits,
least significant first, each stored as ``chr(48 + chunk)`` with bit 0x20 meaning "more chunks
follow"; bit 0x10 of a value's last chunk is its sign. Run 0, 1 and 2 of a mask are values 0, 1
and 2; run ``j > 2`` is value ``j`` plus run ``j - 2``. So the runs of one parity are a running
sum of the values of that parity, restarted at each mask's run 1 (odd runs) and run 2 (even
runs, run 0 standing alone): one running sum per parity over all masks, less a constant per
chain. Sums and minima of each chain then come from ``np.add.reduceat`` /
``np.minimum.reduceat`` over the running sums, never materialising the runs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compressed_rles_cover"]

# Value of a one-chunk value from its character: '0'..'?' are 0..15, '@'..'O' are -16..-1
# (sign bit 0x10); characters with the "more" bit, or outside '0'..'o', are handled apart.
_ONE_CHUNK = np.zeros(256, dtype=np.int64)
_ONE_CHUNK[48:64] = np.arange(16)
_ONE_CHUNK[64:80] = np.arange(-16, 0)
_BLOCK = 4000  # strings per block: the arrays of a block stay in the CPU cache


def compressed_rles_cover(counts: list, sizes: np.ndarray) -> bool:
    """True when every string of ``counts`` (compressed RLE text, ``str``) is well formed and
    its runs are non-negative and sum to ``sizes[i, 0] * sizes[i, 1]``; False otherwise
    (including a malformed string: ask ``lazydet.data.rle.check_compressed_rles`` which and why).
    """
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    if len(sizes) != len(counts):
        return False
    expected = sizes[:, 0] * sizes[:, 1]
    for lo in range(0, len(counts), _BLOCK):
        if not _block_covers(counts[lo : lo + _BLOCK], expected[lo : lo + _BLOCK]):
            return False
    return True


def _block_covers(strings: list, expected: np.ndarray) -> bool:
    try:
        text = "".join(strings).encode("ascii")
    except (UnicodeEncodeError, TypeError):
        return False
    lengths = np.fromiter(map(len, strings), np.int64, count=len(strings))
    if not len(strings):
        return True
    if not lengths.all():
        return False  # no runs: covers nothing
    raw = np.frombuffer(text, dtype=np.uint8)
    chunk = raw - np.uint8(48)  # wraps below '0'
    if chunk.max() > 63:
        return False
    last = chunk < 32  # a value's last chunk
    string_start = np.cumsum(lengths) - lengths
    if not last[string_start + lengths - 1].all():
        return False  # a string ends inside a value
    values = _ONE_CHUNK[raw[last]]
    per_string = np.add.reduceat(last, string_start, dtype=np.int64)  # values per string
    first = np.cumsum(per_string) - per_string  # index of each string's value 0
    if not _fix_long_values(values, chunk, last):
        return False
    # Running sums per global parity (index i of parity p is at p_sums[p][i // 2]).
    sums = (np.cumsum(values[0::2]), np.cumsum(values[1::2]))
    run0 = values[first]
    total = run0.copy()
    lowest = run0.copy()
    # Runs 2, 4, ... (global parity = parity of value 0) and runs 1, 3, ... (the other).
    for chain_start, count in ((first + 2, (per_string - 1) // 2), (first + 1, per_string // 2)):
        chain_parity = chain_start & 1
        for p in (0, 1):
            rows = np.flatnonzero((chain_parity == p) & (count > 0))
            if not len(rows):
                continue
            s = sums[p]
            sub_start = chain_start[rows] // 2
            # The running sum just before the chain (0 at the very start).
            before = np.where(sub_start > 0, s[np.maximum(sub_start - 1, 0)], 0)
            # reduceat spans start..next start: give every chain its own end by interleaving
            # the starts with the ends (the spans between are discarded).
            bounds = np.empty(2 * len(rows), dtype=np.int64)
            bounds[0::2] = sub_start
            bounds[1::2] = sub_start + count[rows]
            tail = bounds[-1] == len(s)
            if tail:
                bounds = bounds[:-1]
            chain_sum = np.add.reduceat(s, bounds)[0::2]
            chain_min = np.minimum.reduceat(s, bounds)[0::2]
            total[rows] += chain_sum - count[rows] * before
            lowest[rows] = np.minimum(lowest[rows], chain_min - before)
    return bool((lowest >= 0).all() and np.array_equal(total, expected))


def _fix_long_values(values: np.ndarray, chunk: np.ndarray, last: np.ndarray) -> bool:
    """Give the values of more than one chunk (few: large first runs and long runs) their
    value in place; False when one is longer than 6 chunks (pycocotools' C int overflows)."""
    more = np.flatnonzero(~last)  # chunks followed by another of the same value
    if not len(more):
        return True
    # Value index of each such chunk: the value ends before it, i.e. its position less the
    # "more" chunks before it.
    value = more - np.arange(len(more))
    new_value = np.r_[True, value[1:] != value[:-1]]
    group_start = np.flatnonzero(new_value)
    group_size = np.diff(np.r_[group_start, len(more)])
    if group_size.max() > 5:
        return False
    position = np.arange(len(more)) - np.repeat(group_start, group_size)  # chunk k of its value
    low = np.zeros(len(group_start), dtype=np.int64)
    np.add.at(low, np.repeat(np.arange(len(group_start)), group_size),
              (chunk[more].astype(np.int64) & 0x1F) << (5 * position))  # fmt: skip
    # The last chunk: its 5 bits above the others, and the sign over all of them.
    end = chunk[more[group_start] + group_size].astype(np.int64)
    shift = 5 * group_size
    values[value[group_start]] = (
        low + ((end & 0x1F) << shift) - (((end & 0x10) != 0).astype(np.int64) << (shift + 5))
    )
    return True
