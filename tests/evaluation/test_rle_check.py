"""The batched yes/no RLE check (``lazydet.evaluation.rle_check``) gives the answer of the
describing one (``lazydet.data.rle.check_compressed_rles``) on pycocotools' own strings and on
corrupted ones: truncated, doubled, a character changed or dropped, negative runs that still sum
to the mask, values past 30 bits, sizes that do not match."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from lazydet.data import rle
from lazydet.evaluation import rle_check


def _encode(runs) -> str:
    """pycocotools' ``rleToString`` for any runs, negative ones included."""
    out = []
    for i, run in enumerate(runs):
        x = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(48 + (c | 0x20 if more else c)))
    return "".join(out)


def _reference(counts, sizes) -> bool:
    try:
        return rle.check_compressed_rles([{"counts": c} for c in counts], sizes) is None
    except ValueError:  # a malformed string
        return False


BLOCK = 64  # strings per block in these tests, so that a few hundred masks span several


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(rle_check, "_BLOCK", BLOCK)


@pytest.fixture(scope="module")
def masks():
    rng = np.random.default_rng(0)
    out = []
    for n in range(2 * BLOCK + 50):  # three blocks
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        if n % 10 == 1:  # a few large blocks: first runs of 3-4 chunks
            h, w = int(rng.integers(300, 700)), int(rng.integers(300, 700))
        kind = n % 4
        if kind == 0:  # noise: many short runs
            mask = rng.random((h, w)) < 0.5
        elif kind == 1:  # one block: a few long runs
            mask = np.zeros((h, w), bool)
            mask[h // 2 :] = True
        else:  # full, empty
            mask = np.full((h, w), kind == 2)
        out.append(np.asfortranarray(mask.astype(np.uint8)))
    counts = [mask_utils.encode(m)["counts"].decode() for m in out]
    return counts, np.array([m.shape for m in out], dtype=np.int64)


def test_pycocotools_strings_cover_their_masks(masks):
    counts, sizes = masks
    assert rle_check.compressed_rles_cover(counts, sizes)
    assert _reference(counts, sizes)
    assert rle_check.compressed_rles_cover([], np.zeros((0, 2)))


def test_the_encoder_here_is_pycocotools(masks):
    counts, _ = masks
    for n in range(0, len(counts), 7):
        runs = rle.rle_run_lengths(counts[n])
        assert _encode(runs) == counts[n]


def _corruptions(counts, sizes, rng):
    """(name, counts, sizes) with one string or size changed, in the second or third block."""
    for trial in range(400):
        n = int(rng.integers(BLOCK, len(counts)))
        s, size = counts[n], sizes.copy()
        i = int(rng.integers(0, len(s)))
        kind = trial % 10
        runs = rle.rle_run_lengths(s).tolist()
        h, w = size[n]
        if kind == 0:
            s = s[:-1]
        elif kind == 1:
            s = s * 2
        elif kind == 2:
            s = s[:i] + chr(int(rng.integers(40, 120))) + s[i + 1 :]
        elif kind == 3:
            s = s[:i] + s[i + 1 :]
        elif kind == 4:
            size[n] = (h, w + 1)
        elif kind == 5:  # a negative run, the total kept
            s = (
                _encode([h * w + 3, -3])
                if len(runs) < 3
                else _encode([*runs[:2], -1, runs[2] + 1, *runs[3:]])
            )
        elif kind == 6:  # a negative run later in a chain (a large negative delta)
            s = _encode([*runs, 5, -5])
        elif kind == 7:  # a value of 7 chunks
            s = s + "o" * 6 + "0"
        elif kind == 8:  # a character outside '0'..'o', or not ASCII
            s = s[:i] + ("p" if trial % 20 < 10 else "é") + s[i + 1 :]
        else:  # an extra run of 0 at the end: still covers, still sound
            s = _encode([*runs, 0])
        yield f"{trial}-{kind}", [*counts[:n], s, *counts[n + 1 :]], size


def test_corrupted_strings_get_the_describing_checks_answer(masks):
    counts, sizes = masks
    rng = np.random.default_rng(1)
    refused = 0
    for name, bad_counts, bad_sizes in _corruptions(counts, sizes, rng):
        expected = _reference(bad_counts, bad_sizes)
        refused += not expected
        assert rle_check.compressed_rles_cover(bad_counts, bad_sizes) == expected, name
    assert 300 < refused < 400  # both answers were asked for
