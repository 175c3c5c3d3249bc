"""Heads that turn encoder features into task outputs; importing this package registers them in ``HEADS``."""

from densevision.models.heads.classifier import ClassifierHead

__all__ = ["ClassifierHead"]
