# Quick start for classification: a small DenseNet-BC trained from scratch on generated shapes (one triangle,
# rectangle or ellipse per 64x64 image) in a few minutes on 2 CPU cores. The data is written to data/shapes on first
# use as class folders read by the same ImageFolderDataset that serves ImageNet-style data.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/shapes_classification.py"]
model = dict(
    type="Classifier",
    model=dict(type="densenet_bc", depth=16, growth_rate=8, num_classes=3, drop_rate=0.0),
)
train_dataloader = dict(batch_size=16, num_workers=0, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=32, num_workers=0, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=32, num_workers=0, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="Accuracy", topk=(1,))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=3e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=15, eta_min=1e-5)]
train_cfg = dict(max_epochs=15, val_interval=3)
checkpoint = dict(monitor="top1", mode="max")
