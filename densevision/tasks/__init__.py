"""The tasks: each owns its wrapper (what the runner trains), its file predictor, result writers and drawing.

Importing this package registers ``Segmentor``, ``Classifier`` and ``Detector`` in ``TASKS`` and their predictors in
``PREDICTORS``, with the early-exit classifier's (``densevision.early_exit.predictor``); it loads neither nibabel
nor rasterio (file formats load them when such a file is read or written).
"""

import densevision.early_exit.predictor  # noqa: F401  (registers EarlyExitPredictor)
from densevision.tasks.classification import ClassificationPredictor, Classifier
from densevision.tasks.detection import DetectionPredictor, Detector
from densevision.tasks.segmentation import SegmentationPredictor, Segmentor

__all__ = [
    "Segmentor",
    "SegmentationPredictor",
    "Classifier",
    "ClassificationPredictor",
    "Detector",
    "DetectionPredictor",
]
