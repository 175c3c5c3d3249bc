# Everything of a CamVid segmentation run except the network: data, loaders, metric and the Tiramisu recipe
# (RMSprop 1e-3 x 0.995 per epoch, weight decay 1e-4 on weights only, batch 3 of random 224x224 crops + flips,
# early stopping with patience 150 on validation mIoU). Top-level configs add a `network` and wrap it in a Segmentor.
_base_ = ["default_runtime.py", "datasets/camvid.py", "schedules/tiramisu_camvid.py"]
train_dataloader = dict(batch_size=3, num_workers=2, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=1, num_workers=2, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=1, num_workers=2, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="SegmentationMetric")  # classes and the void label come from the dataset
test_evaluator = val_evaluator
