"""Benchmark: loading a COCO-train-sized json, and dataset memory across DataLoader workers.

Generates a synthetic COCO instances json (default 118,287 images x ~7 polygon annotations, like
COCO train2017, ~1% crowd RLE) in a temporary directory, then, each in a fresh subprocess so peak
memory is measured alone:

* ``pycocotools+d2-style``: ``pycocotools.coco.COCO(json)`` followed by the Detectron2-style
  conversion to a list of per-image dicts (what Detectron2's ``load_coco_json`` does);
* ``lazydet``: ``lazydet.data.load_coco_json``;
* ``lazydet+serialized``: the same, then packed into ``SerializedList`` (what the loaders hold).

For each: load time, peak RSS increase while loading, RSS increase kept afterwards, and the private
memory a forked worker acquires by reading every record once (copy-on-read growth per worker).

Usage: ``python scripts/bench_data.py [--num-images 118287] [--anns-per-image 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def generate_json(path: str, num_images: int, anns_per_image: float, seed: int = 0) -> dict:
    """Stream a COCO instances json to ``path``; returns counts."""
    rng = np.random.default_rng(seed)
    height, width = 480, 640
    # A pool of distinct polygons (8-40 vertices) with their boxes; annotations draw from it, so
    # the file has realistic token counts without formatting 40M floats one by one.
    pool = []
    for _ in range(4096):
        n = int(rng.integers(8, 41))
        cx, cy = rng.uniform(60, width - 60), rng.uniform(60, height - 60)
        radius = rng.uniform(5, 55, size=n)
        angle = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        xs, ys = cx + radius * np.cos(angle), cy + radius * np.sin(angle)
        coords = ",".join(f"{v:.2f}" for v in np.stack([xs, ys], 1).reshape(-1))
        box = f"{xs.min():.2f},{ys.min():.2f},{xs.max() - xs.min():.2f},{ys.max() - ys.min():.2f}"
        area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
        pool.append((coords, box, f"{area:.2f}"))
    crowd_counts = ",".join(str(c) for c in [height * width - 2000] + [100] * 20)
    counts = rng.poisson(anns_per_image, size=num_images)
    num_annotations = int(counts.sum())
    ann_id = 0
    with open(path, "w") as f:
        f.write('{"info":{"description":"lazydet bench"},"licenses":[],"images":[')
        f.write(
            ",".join(
                f'{{"id":{i + 1},"file_name":"{i + 1:012d}.jpg","height":{height},"width":{width},'
                f'"license":1,"coco_url":"http://example/{i + 1:012d}.jpg"}}'
                for i in range(num_images)
            )
        )
        f.write('],"annotations":[')
        first = True
        picks = rng.integers(0, len(pool), size=num_annotations)
        categories = rng.integers(1, 81, size=num_annotations)
        crowd = rng.random(num_annotations) < 0.01
        chunk = []
        for image_index, n in enumerate(counts):
            for _ in range(n):
                coords, box, area = pool[picks[ann_id]]
                if crowd[ann_id]:
                    segmentation = f'{{"counts":[{crowd_counts}],"size":[{height},{width}]}}'
                else:
                    segmentation = f"[[{coords}]]"
                chunk.append(
                    f'{{"id":{ann_id + 1},"image_id":{image_index + 1},"category_id":{categories[ann_id]},'
                    f'"iscrowd":{int(crowd[ann_id])},"area":{area},"bbox":[{box}],'
                    f'"segmentation":{segmentation}}}'
                )
                ann_id += 1
            if len(chunk) > 10000:
                f.write(("" if first else ",") + ",".join(chunk))
                first, chunk = False, []
        if chunk:
            f.write(("" if first else ",") + ",".join(chunk))
        f.write('],"categories":[')
        f.write(
            ",".join(f'{{"id":{c},"name":"class{c}","supercategory":"x"}}' for c in range(1, 81))
        )
        f.write("]}")
    return {"images": num_images, "annotations": num_annotations, "bytes": os.path.getsize(path)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _private_mb() -> float:
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def _touch(record: dict) -> None:
    for annotation in record["annotations"]:
        annotation["bbox"]
        annotation.get("segmentation")


def _worker_growth_mb(records) -> float:
    """Private memory a forked child acquires by reading every record once, minus an idle child's."""

    def child(work: bool) -> float:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            if work:
                for i in range(len(records)):
                    _touch(records[i])
            os.write(write_fd, str(_private_mb()).encode())
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            value = float(f.read())
        os.waitpid(pid, 0)
        return value

    return child(True) - child(False)


def d2_style_from_pycocotools(json_file: str, image_root: str) -> list[dict]:
    """pycocotools' COCO index + conversion to per-image dicts, the way Detectron2 does it."""
    from pycocotools.coco import COCO

    api = COCO(json_file)
    category_ids = sorted(api.getCatIds())
    contiguous = {c: i for i, c in enumerate(category_ids)}
    records = []
    for image_id in sorted(api.imgs):
        image = api.imgs[image_id]
        annotations = []
        for ann in api.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            obj = {
                "bbox": [x, y, x + w, y + h],
                "category_id": contiguous[ann["category_id"]],
                "iscrowd": ann.get("iscrowd", 0),
            }
            segmentation = ann.get("segmentation")
            if isinstance(segmentation, list):
                segmentation = [p for p in segmentation if len(p) % 2 == 0 and len(p) >= 6]
            obj["segmentation"] = segmentation
            if "keypoints" in ann:
                obj["keypoints"] = [
                    v + 0.5 if i % 3 != 2 else v for i, v in enumerate(ann["keypoints"])
                ]
            annotations.append(obj)
        records.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "height": image["height"],
                "width": image["width"],
                "image_id": image_id,
                "annotations": annotations,
            }
        )
    return records


def run_method(method: str, json_file: str) -> dict:
    import gc

    import pycocotools.coco  # noqa: F401  (imported before the baseline, as lazydet is)

    from lazydet.data import SerializedList, load_coco_json
    from lazydet.data.serialized import release_freed_heap_memory

    gc.collect()
    baseline = _rss_mb()
    start = time.perf_counter()
    if method == "pycocotools+d2-style":
        records = d2_style_from_pycocotools(json_file, "/images")
    else:
        records = load_coco_json(json_file, "/images")
        if method == "lazydet+serialized":
            records = SerializedList(records)  # what build_train_loader does, then frees the list
            release_freed_heap_memory()
    elapsed = time.perf_counter() - start
    gc.collect()
    return {
        "method": method,
        "seconds": elapsed,
        "peak_mb": _peak_rss_mb() - baseline,
        "kept_mb": _rss_mb() - baseline,
        "worker_growth_mb": _worker_growth_mb(records),
        "records": len(records),
    }


METHODS = ("pycocotools+d2-style", "lazydet", "lazydet+serialized")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=118287)
    parser.add_argument("--anns-per-image", type=float, default=7.3)
    parser.add_argument("--json", help="benchmark this existing json instead of generating one")
    parser.add_argument("--run-method", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_method:
        print(json.dumps(run_method(args.run_method, args.json)))
        return
    with tempfile.TemporaryDirectory(prefix="lazydet-bench-") as tmp:
        json_file = args.json
        if json_file is None:
            json_file = os.path.join(tmp, "instances_bench.json")
            start = time.perf_counter()
            info = generate_json(json_file, args.num_images, args.anns_per_image)
            print(
                f"generated {info['images']} images, {info['annotations']} annotations, "
                f"{info['bytes'] / 2**20:.0f} MB json in {time.perf_counter() - start:.1f} s"
            )
        rows = []
        for method in METHODS:
            out = subprocess.run(
                [sys.executable, __file__, "--run-method", method, "--json", json_file],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    header = f"{'method':<22} {'load s':>8} {'peak RSS +MB':>13} {'kept RSS +MB':>13} {'per-worker copy MB':>19}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['method']:<22} {r['seconds']:>8.1f} {r['peak_mb']:>13.0f} {r['kept_mb']:>13.0f} "
            f"{r['worker_growth_mb']:>19.1f}"
        )


if __name__ == "__main__":
    main()
