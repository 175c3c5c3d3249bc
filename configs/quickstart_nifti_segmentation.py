# Medical quick start: a small FC-DenseNet trained from scratch on generated CT-like NIfTI volumes (an organ with
# lesions; 2.5D axial slices, 3 channels), evaluated per volume with Dice and HD95 (mm) in a few minutes on 2 CPU
# cores. The volumes are written to data/ellipsoids on first use, in the Decathlon layout the real tasks use.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/ellipsoid_volumes.py"]
model = dict(
    type="Segmentor",
    model=dict(
        type="FCDenseNet",
        down_layers=(2, 3, 4),
        bottleneck_layers=4,
        growth_rate=12,
        stem_channels=16,
        in_chans=3,
        num_classes=3,
        drop_rate=0.0,
    ),
    # The lesions are 0.2 % of the voxels: Dice keeps them from being drowned by cross-entropy's background.
    loss=dict(type="CombinedLoss", losses=[dict(type="CrossEntropyLoss"), dict(type="DiceLoss")], weights=[1.0, 1.0]),
)
train_dataloader = dict(num_workers=0)
val_dataloader = dict(num_workers=0)
test_dataloader = dict(num_workers=0)
val_evaluator = dict(type="VolumeSegmentationMetric")  # classes and the void label come from the dataset
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=3e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=20, eta_min=1e-5)]
train_cfg = dict(max_epochs=20, val_interval=5)
checkpoint = dict(monitor="mDice", mode="max")
