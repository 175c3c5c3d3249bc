"""Metrics; importing this package registers them."""

from densevision.evaluation import classification, segmentation  # noqa: F401
