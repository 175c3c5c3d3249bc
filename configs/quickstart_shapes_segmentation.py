# Quick start (`make demo`): a small FC-DenseNet trained from scratch on generated shapes (64x64, 4 classes incl.
# background) in a few minutes on 2 CPU cores. The data is written to data/shapes on first use, as image and mask
# folders read by the same MaskFolderDataset that serves real medical or satellite data.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/shapes_segmentation.py"]
model = dict(
    type="Segmentor",
    model=dict(
        type="FCDenseNet",
        down_layers=(2, 3, 4, 5),
        bottleneck_layers=5,
        growth_rate=12,
        stem_channels=16,
        num_classes=4,
        drop_rate=0.0,
    ),
)
train_dataloader = dict(batch_size=8, num_workers=0, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=16, num_workers=0, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=16, num_workers=0, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="SegmentationMetric")  # classes and the void label come from the dataset
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=3e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=25, eta_min=1e-5)]
train_cfg = dict(max_epochs=25, val_interval=5)
checkpoint = dict(monitor="mIoU", mode="max")
