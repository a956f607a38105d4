"""Pascal VOC XML parsing on a tiny VOC tree written here (reference: the XML's own numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lazydet.data import load_voc_instances

XML = """<annotation><filename>{id}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def _voc_tree(root: Path, images: dict[str, list[tuple]], split: str = "trainval") -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, objects in images.items():
        body = "".join(
            OBJECT.format(name=n, difficult=d, x0=a, y0=b, x1=c, y1=e)
            for n, d, a, b, c, e in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            XML.format(id=image_id, w=500, h=375, objects=body)
        )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")
    return root


def test_voc_parsing(tmp_path: Path) -> None:
    root = _voc_tree(
        tmp_path / "VOC2007",
        {"000005": [("chair", 0, 263, 211, 324, 339), ("person", 1, 1, 1, 500, 375)], "000007": []},
    )
    records = load_voc_instances(root, "trainval")
    assert [r["image_id"] for r in records] == ["000005", "000007"]
    first = records[0]
    assert (first["height"], first["width"]) == (375, 500)
    assert first["file_name"] == str(root / "JPEGImages" / "000005.jpg")
    chair, person = first["annotations"]
    # 1-based inclusive pixel indices -> continuous: xmin/ymin - 1, xmax/ymax unchanged.
    assert chair["bbox"] == (262.0, 210.0, 324.0, 339.0)
    assert chair["category_id"] == 8  # "chair" is the 9th VOC class
    assert person["bbox"] == (0.0, 0.0, 500.0, 375.0) and person["difficult"] == 1
    assert person["category_id"] == 14
    assert records[1]["annotations"] == []


def test_voc_errors(tmp_path: Path) -> None:
    root = _voc_tree(tmp_path / "VOC", {"1": [("unicorn", 0, 1, 1, 2, 2)]})
    with pytest.raises(ValueError, match=r"1\.xml: object #0 has class 'unicorn'"):
        load_voc_instances(root, "trainval")
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_voc_instances(root, "test")
