# Generated CT-like volumes (background, organ, lesion), 48x48x24 voxels of 1.5x1.5x3 mm with rotated affines: written
# to data/ellipsoids on first use by EllipsoidVolumes in the Medical Segmentation Decathlon layout (dataset.json,
# imagesTr/, labelsTr/, imagesTs/, labelsTs/) and read by the same DecathlonDataset that serves the real tasks.
# 2.5D: each axial slice with one neighbour on each side (3 channels); an abdominal CT window (W400 L40) scaled to
# [0, 1]. Normalize's figures come from `python tools/band_stats.py configs/quickstart_nifti_segmentation.py`.
data_root = "data/ellipsoids"
volumes = dict(num_train=8, num_val=2, num_test=2, shape=(48, 48, 24), seed=0)
slicing = dict(axis=-1, context=1, modality="CT", window=(-160, 240))
normalize = dict(type="Normalize", mean=(0.362738,) * 3, std=(0.0762094,) * 3, max_pixel_value=1.0)
train_pipeline = [
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    normalize,
]
test_pipeline = [normalize]
# Training keeps every slice showing the organ and 30 % of the others (redrawn each epoch); evaluation keeps all, so
# VolumeSegmentationMetric can stack them back into volumes.
_common = dict(type="EllipsoidVolumes", root=data_root, **volumes, **slicing)
train_dataset = dict(_common, split="train", pipeline=train_pipeline, empty_slice_rate=0.3)
val_dataset = dict(_common, split="val", pipeline=test_pipeline)
test_dataset = dict(_common, split="test", pipeline=test_pipeline)
train_dataloader = dict(batch_size=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=24, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=24, shuffle=False, dataset=test_dataset)
