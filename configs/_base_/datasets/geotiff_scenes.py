# Generated georeferenced scenes (EPSG:32633, 10 m pixels; blue, green, red and near-infrared uint16 reflectance x 1e4)
# with label rasters (soil, water, vegetation, building; 255 = nodata): written to data/scenes on first use by
# GeneratedScenes, one scene per split (train 512x512, val and test 256x256), and read by RasterWindowDataset: random
# 64x64 windows for training, a grid of windows covering each pixel once for evaluation. The nodata corner of each
# scene is ignored. Normalize's figures: `python tools/band_stats.py configs/quickstart_geotiff_segmentation.py`.
data_root = "data/scenes"
window = dict(window_size=64, bands=(1, 2, 3, 4))
normalize = dict(
    type="Normalize",
    mean=(0.0161894, 0.0187015, 0.0200737, 0.0361973),
    std=(0.00540861, 0.00553642, 0.00940651, 0.017065),
    max_pixel_value=65535.0,
)
train_pipeline = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    dict(type="RandomRotate90", p=0.5),
    normalize,
]
test_pipeline = [normalize]
train_dataset = dict(
    type="GeneratedScenes", root=data_root, split="train", mode="random", samples_per_epoch=128,
    pipeline=train_pipeline, **window,
)  # fmt: skip
val_dataset = dict(type="GeneratedScenes", root=data_root, split="val", mode="grid", pipeline=test_pipeline, **window)
test_dataset = dict(type="GeneratedScenes", root=data_root, split="test", mode="grid", pipeline=test_pipeline, **window)
train_dataloader = dict(batch_size=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=8, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=8, shuffle=False, dataset=test_dataset)
