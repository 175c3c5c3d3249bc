"""Heads that turn encoder features into task outputs; importing this package registers them in ``HEADS``."""

from densevision.models.heads.classifier import ClassifierHead
from densevision.models.heads.ssd import L2Norm, MultiBoxLoss, SSDHead, default_boxes, postprocess

__all__ = ["ClassifierHead", "L2Norm", "MultiBoxLoss", "SSDHead", "default_boxes", "postprocess"]
