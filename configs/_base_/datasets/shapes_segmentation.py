# Generated shapes (background, triangle, rectangle, ellipse), 64x64: written to data/shapes on first use by
# ShapesSegmentation (a MaskFolderDataset over data/shapes/segmentation/{images,masks}/<split>/).
data_root = "data/shapes"
shapes = dict(num_train=300, num_val=60, num_test=60, image_size=64, seed=0)
normalize = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
train_pipeline = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    normalize,
]
test_pipeline = [normalize]
train_dataset = dict(type="ShapesSegmentation", root=data_root, split="train", pipeline=train_pipeline, **shapes)
val_dataset = dict(type="ShapesSegmentation", root=data_root, split="val", pipeline=test_pipeline, **shapes)
test_dataset = dict(type="ShapesSegmentation", root=data_root, split="test", pipeline=test_pipeline, **shapes)
train_dataloader = dict(batch_size=16, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=16, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=16, shuffle=False, dataset=test_dataset)
