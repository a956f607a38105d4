"""The batched RLE reader behind the evaluation input check (``lazydet.data.rle``): many masks'
run lengths at once, held to the masks pycocotools decodes, and the first bad mask found by
index across blocks."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from lazydet.data import rle


def _runs_of(mask: np.ndarray) -> np.ndarray:
    """Run lengths of a mask in COCO's order (column-major, starting with a run of zeros)."""
    flat = mask.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, change, flat.size]
    runs = np.diff(bounds)
    return np.r_[0, runs] if flat.size and flat[0] else runs


def _random_masks(rng, count, largest=300):
    masks = []
    for n in range(count):
        h, w = int(rng.integers(1, largest)), int(rng.integers(1, largest))
        kind = n % 4
        if kind == 0:  # noise: many short runs
            mask = rng.random((h, w)) < 0.5
        elif kind == 1:  # one block: a few long runs (multi-chunk values)
            mask = np.zeros((h, w), bool)
            mask[h // 4 : h // 4 * 3 + 1, w // 3 :] = True
        elif kind == 2:
            mask = np.ones((h, w), bool)
        else:
            mask = np.zeros((h, w), bool)
        masks.append(np.asfortranarray(mask.astype(np.uint8)))
    return masks


def test_batched_runs_equal_the_decoded_masks():
    rng = np.random.default_rng(0)
    masks = _random_masks(rng, 200)
    strings = [mask_utils.encode(m)["counts"].decode() for m in masks]
    runs, first = rle._decode(strings)
    assert len(first) == len(strings) + 1
    for n, mask in enumerate(masks):
        np.testing.assert_array_equal(runs[first[n] : first[n + 1]], _runs_of(mask))
        np.testing.assert_array_equal(rle.rle_run_lengths(strings[n]), _runs_of(mask))
    # The strings as pycocotools decodes them (not only as we read them back).
    for n in range(0, 200, 37):
        decoded = mask_utils.decode({"size": list(masks[n].shape), "counts": strings[n]})
        np.testing.assert_array_equal(decoded, masks[n])


def test_first_bad_mask_is_found_across_blocks():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, 2 * rle._BLOCK + 300, largest=24)
    rles = [mask_utils.encode(m) for m in masks]
    rles = [{"size": r["size"], "counts": r["counts"].decode()} for r in rles]
    sizes = [tuple(r["size"]) for r in rles]
    assert rle.check_compressed_rles(rles, sizes) is None
    late = 2 * rle._BLOCK + 17  # in the third block
    doubled = [*rles[:late], {**rles[late], "counts": rles[late]["counts"] * 2}, *rles[late + 1 :]]
    assert rle.check_compressed_rles(doubled, sizes) == late
    # "O" is chunk 31: a one-chunk value with the sign bit, -1: a negative first run.
    negative = list(doubled)
    negative[rle._BLOCK + 3] = {
        **rles[rle._BLOCK + 3],
        "counts": "O" + rles[rle._BLOCK + 3]["counts"],
    }
    assert rle.check_compressed_rles(negative, sizes) == rle._BLOCK + 3
    # An empty string among them: no runs, which cover no pixel.
    empty = list(rles)
    empty[5] = {**rles[5], "counts": ""}
    assert rle.check_compressed_rles(empty, sizes) == 5
