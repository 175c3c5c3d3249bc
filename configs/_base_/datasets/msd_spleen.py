# Medical Segmentation Decathlon, Task09_Spleen (http://medicaldecathlon.com): 41 labelled portal-venous CT volumes,
# 512x512 axial slices, extracted to data/msd/Task09_Spleen/{dataset.json,imagesTr,labelsTr,imagesTs}. The challenge
# withholds the test labels, so 20 % of the training volumes (8, chosen by split_seed) are held out for validation and
# testing. Slices: axial (the last array axis), 2.5D with two neighbours on each side (5 channels); the soft-tissue CT
# window of MONAI's spleen tutorial (-57..164 HU) scaled to [0, 1]. Normalize maps [0, 1] to [-1, 1]; measure the
# training volumes with `python tools/band_stats.py configs/fcdensenet_msd_spleen.py` and paste its line instead.
data_root = "data/msd/Task09_Spleen"
slicing = dict(axis=-1, context=2, modality="CT", window=(-57, 164))
normalize = dict(type="Normalize", mean=(0.5,) * 5, std=(0.5,) * 5, max_pixel_value=1.0)
train_pipeline = [
    dict(type="PadIfNeeded", min_height=224, min_width=224, fill=0, fill_mask=255),
    dict(type="RandomCrop", height=224, width=224),
    dict(type="HorizontalFlip", p=0.5),
    normalize,
]
test_pipeline = [normalize]
_common = dict(type="DecathlonDataset", root=data_root, val_fraction=0.2, split_seed=0, **slicing)
# Training: every slice showing the spleen and 10 % of the others (redrawn each epoch); evaluation: every slice.
train_dataset = dict(_common, split="train", pipeline=train_pipeline, empty_slice_rate=0.1)
val_dataset = dict(_common, split="val", pipeline=test_pipeline)
test_dataset = val_dataset
train_dataloader = dict(batch_size=3, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=4, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=4, shuffle=False, dataset=test_dataset)
