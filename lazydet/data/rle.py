"""Checks of COCO run-length encoded masks, made before pycocotools reads them.

pycocotools decodes RLEs in C and trusts them: counts that sum to less than ``H x W`` leave the
rest of the mask uninitialised (random masks that change from run to run), more than ``H x W``
or garbage fail later with a message naming no file or annotation, a truncated compressed string
is read past its end. ``check_rle`` refuses all of these with a message saying what is wrong;
callers add the file and annotation id. Decoding itself stays pycocotools' job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_compressed_rles", "check_rle", "rle_run_lengths"]


def rle_run_lengths(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64 ``[R]``) of a compressed COCO RLE string, without decoding the mask.

    pycocotools offers no way to read them back, so this reads them (vectorised). The format
    (``rleFrString`` in pycocotools' ``maskApi.c``): each value is a run of 5-bit chunks, least
    significant first, stored as ``chr(48 + chunk)``; bit 0x20 means "more chunks follow" and
    bit 0x10 of the last chunk is the sign; from the fourth value on, each is stored as the
    difference to the value two places earlier. Raises ``ValueError`` on a malformed string.
    """
    runs, _ = _decode([counts])
    return runs


def _decode(strings: list) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of several compressed RLE strings at once (one NumPy pass over their bytes):
    ``(runs [R] int64, string [R] int64: which string each run belongs to)``."""
    try:
        data = [s if isinstance(s, bytes) else s.encode("ascii") for s in strings]
    except UnicodeEncodeError:
        raise ValueError("RLE counts string has non-ASCII characters") from None
    except AttributeError:
        raise ValueError("RLE counts must be a list of run lengths or a string") from None
    lengths_in = np.fromiter(map(len, data), np.int64, count=len(data))
    chunks = np.frombuffer(b"".join(data), dtype=np.uint8).astype(np.int64) - 48
    if chunks.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if ((chunks < 0) | (chunks > 63)).any():
        raise ValueError("RLE counts string has characters outside '0'..'o'")
    more = (chunks & 0x20) != 0
    string_end = np.cumsum(lengths_in) - 1
    if more[string_end[lengths_in > 0]].any():
        raise ValueError("RLE counts string is truncated (its last value is unfinished)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    # 6 chunks = 30 bits; pycocotools shifts a C int, so longer values are undefined there.
    if lengths.max() > 6:
        raise ValueError("RLE counts string has a value longer than 30 bits")
    position = np.arange(chunks.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((chunks & 0x1F) << (5 * position), starts)
    negative = (chunks[ends] & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * lengths[negative])
    # Which string each value belongs to, and its place m in that string.
    string = np.searchsorted(string_end, ends)
    first = np.searchsorted(string, np.arange(len(data)))
    m = np.arange(len(values)) - first[string]
    # Value m > 2 adds run m - 2 (same parity): a cumulative sum per (string, parity) group,
    # m = 0 alone. Groups are contiguous after a stable sort by (string, group).
    group = string * 3 + np.where(m == 0, 0, 1 + (m % 2 == 0))
    order = np.argsort(group, kind="stable")
    grouped = values[order]
    total = np.cumsum(grouped)
    group_sorted = group[order]
    group_start = np.flatnonzero(np.r_[True, group_sorted[1:] != group_sorted[:-1]])
    offset = np.repeat(
        np.r_[0, total[group_start[1:] - 1]], np.diff(np.r_[group_start, len(grouped)])
    )
    runs = np.empty_like(values)
    runs[order] = total - offset
    return runs, string


def check_compressed_rles(rles: list, sizes: list) -> int | None:
    """Index of the first of many compressed RLEs whose runs are negative or do not cover its
    ``(height, width)`` exactly, or None when all are sound; one NumPy pass for all of them.

    ``rles``: ``{"size": [h, w], "counts": str | bytes}`` dicts already known to have string
    counts and ``size == sizes[i]``. Raises ``ValueError`` (naming no index) on a malformed
    string; call ``check_rle`` on each to find and describe it.
    """
    runs, string = _decode([rle["counts"] for rle in rles])
    bad = np.zeros(len(rles), dtype=bool)
    np.logical_or.at(bad, string[runs < 0], True)
    pixels = np.bincount(string, weights=runs, minlength=len(rles))
    expected = np.array([h * w for h, w in sizes], dtype=np.float64)
    bad |= pixels != expected
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_rle(rle: Any, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``rle`` is a COCO RLE of an ``height x width`` mask whose run
    lengths are non-negative integers summing to exactly ``height * width``.

    ``rle``: ``{"size": [height, width], "counts": list[int] | str | bytes}`` (uncompressed run
    lengths, or pycocotools' compressed string).
    """
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise ValueError("RLE segmentation needs 'counts' and 'size'")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        raise ValueError(f"RLE size {size!r} differs from the image size {[height, width]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        bad = next((c for c in counts if type(c) is not int), None)  # bools and floats too
        if bad is not None:
            raise ValueError(f"RLE counts must be integers, got {bad!r}")
        runs = np.asarray(counts, dtype=np.int64)
    elif isinstance(counts, (str, bytes)):
        runs = rle_run_lengths(counts)
    else:
        raise ValueError(
            f"RLE counts must be a list of run lengths or a string, got {type(counts).__name__}"
        )
    if runs.size and runs.min() < 0:
        raise ValueError(f"RLE counts has a negative run length ({int(runs.min())})")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(
            f"RLE counts sum to {total} pixels but the mask is {height}x{width} = "
            f"{height * width} pixels (the RLE is truncated or corrupt)"
        )
