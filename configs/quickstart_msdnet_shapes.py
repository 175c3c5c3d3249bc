# Quick start for adaptive inference: a small MSDNet (4 exits after blocks of 1-2-3-4 multi-scale dense layers)
# trained from scratch on generated shapes of graded difficulty (one triangle, rectangle or ellipse per 32x32 image on a
# plain background, from large and clear to small, faint, noisy and partly occluded; most are easy), in a few minutes
# on 2 CPU cores. The data is written to data/graded_shapes on first use (class folders; each image's difficulty in
# difficulty_<split>.json). tools/test.py reports every exit's accuracy and FLOPs and runs the budgeted-batch sweep:
# exit thresholds calibrated on val (600 images), applied to test (600).
_base_ = ["_base_/default_runtime.py"]
data_root = "data/graded_shapes"
shapes = dict(num_train=3000, num_val=600, num_test=600, image_size=32, seed=0)
normalize = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
train_pipeline = [dict(type="HorizontalFlip", p=0.5), dict(type="RandomRotate90", p=0.5), normalize]
test_pipeline = [normalize]
train_dataset = dict(
    type="GradedShapesClassification", root=data_root, split="train", pipeline=train_pipeline, **shapes
)
val_dataset = dict(type="GradedShapesClassification", root=data_root, split="val", pipeline=test_pipeline, **shapes)
test_dataset = dict(type="GradedShapesClassification", root=data_root, split="test", pipeline=test_pipeline, **shapes)
model = dict(
    type="EarlyExitClassifier",
    model=dict(
        type="MSDNet",
        num_blocks=4,
        step_mode="lin_grow",
        step=1,
        base=1,
        stem_channels=8,
        growth_rate=4,
        growth_factors=(1, 2, 4),
        bottleneck_factors=(1, 2, 4),
        classifier_channels=32,
        num_classes=3,
    ),
)
train_dataloader = dict(batch_size=32, num_workers=0, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=100, num_workers=0, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=100, num_workers=0, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="EarlyExitAccuracy", topk=(1,))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(_delete_=True, type="Adam", lr=3e-3, weight_decay=1e-4))
param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=True, begin=0, end=15, eta_min=1e-5)]
train_cfg = dict(max_epochs=15, val_interval=5)
checkpoint = dict(monitor="top1", mode="max")
