# Generated shapes for detection (triangle, rectangle, ellipse; 1-3 per 64x64 image, boxes around their visible pixels):
# written to data/shapes_detection on first use by ShapesDetection, a CocoDetection over the COCO JSON the generator
# writes, so the quick start reads the same format as COCO itself.
data_root = "data/shapes_detection"
shapes = dict(num_train=1000, num_val=100, num_test=100, image_size=64, seed=0)
normalize = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
train_pipeline = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    normalize,
]
test_pipeline = [dict(type="Resize", height=64, width=64), normalize]
train_dataset = dict(type="ShapesDetection", root=data_root, split="train", pipeline=train_pipeline, **shapes)
val_dataset = dict(type="ShapesDetection", root=data_root, split="val", pipeline=test_pipeline, **shapes)
test_dataset = dict(type="ShapesDetection", root=data_root, split="test", pipeline=test_pipeline, **shapes)
train_dataloader = dict(batch_size=32, num_workers=0, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=50, num_workers=0, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=50, num_workers=0, shuffle=False, dataset=test_dataset)
