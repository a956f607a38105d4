"""Deployment: export a detector (``torch.export`` ``.pt2``, ONNX) and run the exported model.

See docs/deploy.md. ``export_detector`` writes the model and its metadata; ``ExportedPredictor``
runs it with ``Predictor``'s interface.
"""

from lazydet.deploy.export import FORMATS, export_detector, export_program
from lazydet.deploy.graph import DetectionGraph
from lazydet.deploy.runtime import ExportedPredictor, load_exported, postprocess

__all__ = [
    "FORMATS",
    "DetectionGraph",
    "ExportedPredictor",
    "export_detector",
    "export_program",
    "load_exported",
    "postprocess",
]
