"""One home for checkpoints: lazydet's own (save, resume, metadata) and weights users already have.

``save_checkpoint(path, {"model": ..., "metadata": build_metadata(...)})`` writes atomically;
``load_checkpoint(path)`` reads it back with ``torch.load(weights_only=True)``;
``read_metadata(path)`` returns the class names, input format, config and lazydet version a
predictor needs. ``load_weights(model, "model_final_f10217.pkl")`` reads any checkpoint lazydet
knows (lazydet, torchvision, Detectron2) safely (no pickled code runs), recognises its naming,
renames the tensors for ``model`` and returns a ``LoadReport`` of what was loaded, missing,
unexpected or mismatched. See ``docs/weights.md``.
"""

from lazydet.checkpoint.detectron2_names import convert_detectron2_state_dict
from lazydet.checkpoint.formats import (
    Checkpoint,
    CheckpointError,
    SafeUnpickler,
    UnsafeCheckpointError,
    read_checkpoint,
)
from lazydet.checkpoint.load import LoadReport, WeightsMisfitError, load_weights
from lazydet.checkpoint.metadata import build_metadata, config_from_metadata, read_metadata
from lazydet.checkpoint.named_weights import (
    NAMED_WEIGHTS,
    WeightsUnavailableError,
    resolve_named_weights,
)
from lazydet.checkpoint.store import load_checkpoint, save_checkpoint
from lazydet.checkpoint.torchvision_names import convert_torchvision_state_dict

__all__ = [
    "NAMED_WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "LoadReport",
    "SafeUnpickler",
    "UnsafeCheckpointError",
    "WeightsMisfitError",
    "WeightsUnavailableError",
    "build_metadata",
    "config_from_metadata",
    "convert_detectron2_state_dict",
    "convert_torchvision_state_dict",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint",
    "read_metadata",
    "resolve_named_weights",
    "save_checkpoint",
]
