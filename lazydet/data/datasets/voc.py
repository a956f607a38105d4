"""Load Pascal VOC (XML annotations) into lazydet's per-image records.

Directory layout (as distributed)::

    <dirname>/Annotations/<id>.xml  <dirname>/JPEGImages/<id>.jpg  <dirname>/ImageSets/Main/<split>.txt

Records have the same keys as the COCO loader's (see ``lazydet.data.datasets.coco``), with
``bbox`` in XYXY absolute pixels, plus ``difficult`` (0/1) per annotation. VOC boxes are 1-based
inclusive pixel indices; like Detectron2 we subtract 1 from ``xmin``/``ymin`` so that a box covering
pixels 1..W becomes [0, W] in continuous coordinates.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = ["VOC_CLASSES", "VocLoader", "load_voc_instances", "register_pascal_voc"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def _text(node: ET.Element, path: str, xml_file: str) -> str:
    found = node.find(path)
    if found is None or found.text is None:
        raise ValueError(f"{xml_file}: missing <{path}>")
    return found.text.strip()


def load_voc_instances(
    dirname: str | os.PathLike, split: str, class_names: tuple[str, ...] | list[str] = VOC_CLASSES
) -> list[dict]:
    """Read ``ImageSets/Main/<split>.txt`` and the XML file of every listed image."""
    dirname = os.fspath(dirname)
    split_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise FileNotFoundError(f"VOC split file {split_file!r} does not exist")
    with open(split_file) as f:
        image_ids = [line.strip() for line in f if line.strip()]
    class_index = {name: i for i, name in enumerate(class_names)}
    records = []
    for image_id in image_ids:
        xml_file = os.path.join(dirname, "Annotations", f"{image_id}.xml")
        try:
            root = ET.parse(xml_file).getroot()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"VOC annotation {xml_file!r} (listed in {split_file}) does not exist"
            ) from None
        except ET.ParseError as e:
            raise ValueError(f"{xml_file} is not valid XML: {e}") from e
        annotations = []
        for index, obj in enumerate(root.findall("object")):
            name = _text(obj, "name", xml_file)
            if name not in class_index:
                raise ValueError(
                    f"{xml_file}: object #{index} has class {name!r}, not one of {list(class_names)}"
                )
            box = [
                float(_text(obj, f"bndbox/{k}", xml_file)) for k in ("xmin", "ymin", "xmax", "ymax")
            ]
            box[0] -= 1.0
            box[1] -= 1.0
            if not box[0] <= box[2] or not box[1] <= box[3]:
                raise ValueError(f"{xml_file}: object #{index} ({name}) has an inverted box {box}")
            difficult = obj.find("difficult")
            annotations.append(
                {
                    "id": index,
                    "bbox": tuple(box),
                    "category_id": class_index[name],
                    "iscrowd": 0,
                    "difficult": int(difficult.text)
                    if difficult is not None and difficult.text
                    else 0,
                }
            )
        records.append(
            {
                "file_name": os.path.join(dirname, "JPEGImages", f"{image_id}.jpg"),
                "image_id": image_id,
                "height": int(_text(root, "size/height", xml_file)),
                "width": int(_text(root, "size/width", xml_file)),
                "annotations": annotations,
            }
        )
    return records


@dataclass(frozen=True)
class VocLoader:
    """Picklable, comparable loader registered by :func:`register_pascal_voc`."""

    dataset_name: str
    dirname: str
    split: str
    class_names: tuple[str, ...] = VOC_CLASSES
    missing_hint: str = field(default="", compare=False)

    def __call__(self) -> list[dict]:
        if not os.path.isdir(self.dirname):
            raise FileNotFoundError(
                f"dataset {self.dataset_name!r}: VOC directory {self.dirname!r} does not exist. "
                f"{self.missing_hint}".rstrip()
            )
        return load_voc_instances(self.dirname, self.split, self.class_names)


def register_pascal_voc(
    name: str,
    dirname: str | os.PathLike,
    split: str,
    year: int,
    class_names: tuple[str, ...] | list[str] = VOC_CLASSES,
    *,
    missing_hint: str = "",
) -> str:
    """Register a VOC split under ``name`` (metadata: ``thing_classes``, ``evaluator_type``)."""
    loader = VocLoader(
        name, os.path.abspath(os.fspath(dirname)), split, tuple(class_names), missing_hint
    )
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names),
        dirname=loader.dirname,
        split=split,
        year=year,
        evaluator_type="pascal_voc",
    )
    return name
