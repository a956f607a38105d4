"""Loading weights users already have: lazydet, torchvision and Detectron2 checkpoints.

``load_weights(model, "model_final_f10217.pkl")`` reads the file safely (no pickled code runs),
recognises its naming, renames the tensors for ``model`` and returns a ``LoadReport`` of what was
loaded, missing, unexpected or of the wrong shape. See ``docs/weights.md``.
"""

from lazydet.modeling.weights.detectron2_names import convert_detectron2_state_dict
from lazydet.modeling.weights.formats import (
    Checkpoint,
    SafeUnpickler,
    UnsafeCheckpointError,
    read_checkpoint,
)
from lazydet.modeling.weights.load import LoadReport, load_weights
from lazydet.modeling.weights.torchvision_names import convert_torchvision_state_dict

__all__ = [
    "Checkpoint",
    "LoadReport",
    "SafeUnpickler",
    "UnsafeCheckpointError",
    "convert_detectron2_state_dict",
    "convert_torchvision_state_dict",
    "load_weights",
    "read_checkpoint",
]
