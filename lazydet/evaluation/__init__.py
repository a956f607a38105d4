"""Evaluation: COCO AP equal to pycocotools (``coco_evaluate``), the evaluator protocol,
``COCOEvaluator``, ``inference_on_dataset`` and the ``Predictor``. See ``docs/evaluation.md``."""

from lazydet.evaluation.coco_eval import COCOEvalResult, coco_evaluate
from lazydet.evaluation.coco_evaluator import COCOEvaluator, instances_to_coco_json
from lazydet.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from lazydet.evaluation.predictor import Predictor

__all__ = [
    "COCOEvalResult",
    "COCOEvaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "Predictor",
    "coco_evaluate",
    "inference_on_dataset",
    "instances_to_coco_json",
]
