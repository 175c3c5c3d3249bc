# Remote-sensing quick start: a small FC-DenseNet taking 4 bands (B, G, R, NIR), trained from scratch on random
# windows of a generated georeferenced GeoTIFF scene (EPSG:32633, 10 m) and evaluated on the grid of windows of other
# scenes, in a few minutes on 2 CPU cores. The scenes are written to data/scenes on first use.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/geotiff_scenes.py"]
model = dict(
    type="Segmentor",
    model=dict(
        type="FCDenseNet",
        down_layers=(2, 3, 4),
        bottleneck_layers=4,
        growth_rate=12,
        stem_channels=16,
        in_chans=4,
        num_classes=4,
        drop_rate=0.0,
    ),
)
train_dataloader = dict(num_workers=0)
val_dataloader = dict(num_workers=0)
test_dataloader = dict(num_workers=0)
val_evaluator = dict(type="SegmentationMetric")  # classes and the void label come from the dataset
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=3e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=20, eta_min=1e-5)]
train_cfg = dict(max_epochs=20, val_interval=5)
checkpoint = dict(monitor="mIoU", mode="max")
