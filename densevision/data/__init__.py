"""Datasets, readers and augmentation pipelines; importing this package registers them."""

from densevision.data import camvid, image_folder, mask_folder, shapes, transforms  # noqa: F401
