"""Datasets, readers and augmentation pipelines; importing this package registers them."""

from densevision.data import (  # noqa: F401
    camvid,
    coco,
    decathlon,
    detection,
    detection_transforms,
    image_folder,
    mask_folder,
    medical,
    raster,
    shapes,
    synthetic,
    transforms,
    voc,
)
from densevision.data.checks import DatasetError, DatasetSummary
from densevision.data.collate import collate
from densevision.data.transforms import build_pipeline

__all__ = ["collate", "build_pipeline", "DatasetError", "DatasetSummary"]
