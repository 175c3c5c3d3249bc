"""Detection: the task wrapper ``Detector`` and its file predictor ``DetectionPredictor``."""

from densevision.tasks.detection.predictor import DetectionPredictor
from densevision.tasks.detection.task import Detector

__all__ = ["Detector", "DetectionPredictor"]
