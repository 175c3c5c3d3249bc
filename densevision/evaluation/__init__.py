"""Metrics; importing this package registers them."""

from densevision.evaluation import classification, detection, segmentation, volume  # noqa: F401
