# Quick start for detection from scratch: a small DSOD-style detector (stem, four dense blocks, the dense prediction
# structure at 8x8, 4x4, 2x2 and 1x1) trained on generated shapes in a few minutes on 2 CPU cores, evaluated with
# VOC-style mAP@0.5 (all-point). The data is written to data/shapes_detection on first use as images + COCO JSON.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/shapes_detection.py"]
model = dict(
    type="Detector",
    model=dict(
        type="DSOD",
        num_classes=4,  # 3 shapes + background
        image_size=64,
        stem_channels=(16, 16, 32),
        growth_rate=16,
        block_config=(2, 3, 3, 3),
        extra_channels=(64, 32, 32),
        # Default boxes sized to the shapes (boxes of about 12-40 px in 64 px images) rather than SSD's 10-90 % rule,
        # whose smallest boxes (6 px) would match nothing here.
        min_sizes=(16, 24, 36, 52),
        max_sizes=(24, 36, 52, 64),
    ),
)
val_evaluator = dict(type="VOCMetric", ap_method="area")
test_evaluator = val_evaluator
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type="Adam", lr=3e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0),
)
param_scheduler = [
    dict(type="LinearLR", by_epoch=False, begin=0, end=100, start_factor=0.1),
    dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=60, eta_min=1e-5),
]
train_cfg = dict(max_epochs=60, val_interval=10)
checkpoint = dict(monitor="mAP", mode="max")
