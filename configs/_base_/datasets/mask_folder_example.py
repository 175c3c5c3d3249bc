# A satellite-style dataset as image and mask folders: 4-band (R, G, B, NIR) 16-bit GeoTIFF tiles and index-PNG masks
# of the same stem (data/satellite/images/<split>/tile_001.tif <-> data/satellite/masks/<split>/tile_001.png).
# Mask value 255 marks unlabelled pixels. Normalize scales uint16 by max_pixel_value, then standardises per band:
# replace mean/std with your bands' statistics. Models for this data need in_chans=4.
data_root = "data/satellite"
classes = ("background", "building", "road", "water", "vegetation")
palette = [(0, 0, 0), (230, 25, 75), (128, 128, 128), (0, 130, 200), (60, 180, 75)]
normalize = dict(type="Normalize", mean=(0.3, 0.3, 0.3, 0.4), std=(0.15, 0.15, 0.15, 0.2), max_pixel_value=65535.0)
train_pipeline = [
    dict(type="RandomCrop", height=256, width=256),
    dict(type="HorizontalFlip", p=0.5),
    dict(type="VerticalFlip", p=0.5),
    dict(type="RandomRotate90", p=0.5),
    normalize,
]
test_pipeline = [normalize]
_common = dict(type="MaskFolderDataset", classes=classes, palette=palette, ignore_index=255, img_suffix=".tif")
train_dataset = dict(_common, img_dir=f"{data_root}/images/train", mask_dir=f"{data_root}/masks/train")
train_dataset["pipeline"] = train_pipeline
val_dataset = dict(_common, img_dir=f"{data_root}/images/val", mask_dir=f"{data_root}/masks/val")
val_dataset["pipeline"] = test_pipeline
test_dataset = dict(_common, img_dir=f"{data_root}/images/test", mask_dir=f"{data_root}/masks/test")
test_dataset["pipeline"] = test_pipeline
# Training crops share one size; evaluation tiles may not, hence batch 1.
train_dataloader = dict(batch_size=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=1, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=1, shuffle=False, dataset=test_dataset)
