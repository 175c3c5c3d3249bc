# Georeferenced scenes as users keep them: scene rasters (any band count and dtype; here 4-band uint16 R, G, B, NIR
# GeoTIFFs) and single-band label rasters of the same stem, size, CRS and geotransform:
# data/satellite/scenes/<split>/area_01.tif <-> data/satellite/labels/<split>/area_01.tif. No pre-cutting: training
# reads random 256x256 windows, evaluation a grid of windows covering each pixel once. Scene nodata is ignored in the
# labels (and 255 marks unlabelled pixels). Replace Normalize with the output of `python tools/band_stats.py CONFIG`.
data_root = "data/satellite"
classes = ("background", "building", "road", "water", "vegetation")
palette = [(0, 0, 0), (230, 25, 75), (128, 128, 128), (0, 130, 200), (60, 180, 75)]
normalize = dict(type="Normalize", mean=(0.3, 0.3, 0.3, 0.4), std=(0.15, 0.15, 0.15, 0.2), max_pixel_value=65535.0)
train_pipeline = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    dict(type="RandomRotate90", p=0.5),
    normalize,
]
test_pipeline = [normalize]
_common = dict(
    type="RasterWindowDataset", classes=classes, palette=palette, ignore_index=255, window_size=256, bands=(1, 2, 3, 4)
)
train_dataset = dict(
    _common, img_dir=f"{data_root}/scenes/train", label_dir=f"{data_root}/labels/train", mode="random",
    samples_per_epoch=2000, pipeline=train_pipeline,
)  # fmt: skip
val_dataset = dict(
    _common, img_dir=f"{data_root}/scenes/val", label_dir=f"{data_root}/labels/val", mode="grid", pipeline=test_pipeline
)
test_dataset = dict(
    _common, img_dir=f"{data_root}/scenes/test", label_dir=f"{data_root}/labels/test", mode="grid",
    pipeline=test_pipeline,
)  # fmt: skip
train_dataloader = dict(batch_size=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=8, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=8, shuffle=False, dataset=test_dataset)
