"""Segmentation: the task wrapper ``Segmentor`` and its file predictor ``SegmentationPredictor``."""

from densevision.tasks.segmentation.predictor import SegmentationPredictor
from densevision.tasks.segmentation.task import Segmentor

__all__ = ["Segmentor", "SegmentationPredictor"]
