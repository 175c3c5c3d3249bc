# Quick start for classification: a small DenseNet trained from scratch on generated shapes (one triangle, rectangle
# or ellipse per 64x64 image, 3000 for training) in a few minutes on 2 CPU cores. The data is written to
# data/shapes_classification on first use as class folders read by the same ImageFolderDataset as ImageNet-style data.
# Global max pooling: the shape is one small region of the image, which average pooling would dilute.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/shapes_classification.py"]
model = dict(
    type="Classifier",
    model=dict(
        type="DenseNet", growth_rate=16, block_config=(4, 6, 8), stem_channels=32, num_classes=3, global_pool="max"
    ),
)
train_dataloader = dict(batch_size=32, num_workers=0, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=32, num_workers=0, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=32, num_workers=0, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="Accuracy", topk=(1,))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=1e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=25, eta_min=1e-5)]
train_cfg = dict(max_epochs=25, val_interval=5)
checkpoint = dict(monitor="top1", mode="max")
