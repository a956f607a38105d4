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

__all__ = ["check_rle", "rle_run_lengths"]


def rle_run_lengths(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64 ``[R]``) of a compressed COCO RLE string, without decoding the mask.

    pycocotools offers no way to read them back, so this reads them (vectorised). The format
    (``rleFrString`` in pycocotools' ``maskApi.c``): each value is a run of 5-bit chunks, least
    significant first, stored as ``chr(48 + chunk)``; bit 0x20 means "more chunks follow" and
    bit 0x10 of the last chunk is the sign; from the fourth value on, each is stored as the
    difference to the value two places earlier. Raises ``ValueError`` on a malformed string.
    """
    try:
        data = counts if isinstance(counts, bytes) else counts.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("RLE counts string has non-ASCII characters") from None
    chunks = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 48
    if chunks.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ((chunks < 0) | (chunks > 63)).any():
        raise ValueError("RLE counts string has characters outside '0'..'o'")
    more = (chunks & 0x20) != 0
    if more[-1]:
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
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # value m > 2 adds run m - 2 (same parity)
    runs[2::2] = np.cumsum(values[2::2])
    return runs


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
