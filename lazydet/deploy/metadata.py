"""What an exported detector carries besides its graph (one JSON object).

Stored in the ``.pt2`` archive's extra files (``EXTRA_FILE``), in the ONNX model's
``metadata_props`` (key ``METADATA_KEY``) and in a sidecar ``<model>.json`` next to either.

Keys: ``format_version``; ``detector`` (the model class); ``class_names``; ``keypoint_names``;
``keypoint_skeleton``; ``input_format`` (``"RGB"``/``"BGR"``: the channel order the graph takes);
``pixel_mean``; ``size_divisibility`` (the graph pads to multiples of it);
``min_size`` / ``max_size`` (the range of height and width the graph accepts, after the resize); ``dynamic`` (false: only ``export_size``); ``export_size`` (the example's
``[height, width]``); ``resize`` (``{"size", "max_size"}`` of the test-time ``v2.Resize``
that ``ExportedPredictor`` applies first, or null); ``outputs`` (names in order);
``mask_threshold``; ``mask_paste``; ``keypoint_score_type`` (how ``heatmaps_to_keypoints``
scores a keypoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["EXTRA_FILE", "FORMAT_VERSION", "METADATA_KEY", "read_sidecar", "sidecar_path"]

FORMAT_VERSION = 1
EXTRA_FILE = "lazydet_metadata.json"
METADATA_KEY = "lazydet_metadata"


def sidecar_path(model_path: str | Path) -> Path:
    """``model.pt2`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


def read_sidecar(model_path: str | Path) -> dict[str, Any] | None:
    path = sidecar_path(model_path)
    return json.loads(path.read_text()) if path.is_file() else None
