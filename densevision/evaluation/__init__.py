"""Metrics; importing this package registers them."""

import densevision.early_exit.metric  # noqa: F401  (registers EarlyExitAccuracy in METRICS)
from densevision.evaluation import classification, detection, segmentation, volume  # noqa: F401
