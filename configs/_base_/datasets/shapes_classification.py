# Generated shapes, one per 64x64 image (triangle, rectangle, ellipse): written to data/shapes_classification on
# first use by ShapesClassification (an ImageFolderDataset over <root>/classification/<split>/<class>/).
data_root = "data/shapes_classification"  # its own folder: 3000 training images, the segmentation demo uses 300
shapes = dict(num_train=3000, num_val=150, num_test=150, image_size=64, seed=0)
normalize = dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
train_pipeline = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="RandomRotate90", p=0.5),
    normalize,
]
test_pipeline = [normalize]
train_dataset = dict(type="ShapesClassification", root=data_root, split="train", pipeline=train_pipeline, **shapes)
val_dataset = dict(type="ShapesClassification", root=data_root, split="val", pipeline=test_pipeline, **shapes)
test_dataset = dict(type="ShapesClassification", root=data_root, split="test", pipeline=test_pipeline, **shapes)
train_dataloader = dict(batch_size=16, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=16, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=16, shuffle=False, dataset=test_dataset)
