"""Classification: the task wrapper ``Classifier`` and its file predictor ``ClassificationPredictor``."""

from densevision.tasks.classification.predictor import ClassificationPredictor
from densevision.tasks.classification.task import Classifier

__all__ = ["Classifier", "ClassificationPredictor"]
