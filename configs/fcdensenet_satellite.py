# Georeferenced satellite scenes (4-band 16-bit GeoTIFFs + label rasters, 5 classes, 255 = unlabelled), trained on
# random windows read from whole scenes, with FC-DenseNet67 taking 4 input bands; Tiramisu optimiser, Dice +
# cross-entropy loss. Data: data/satellite/{scenes,labels}/{train,val,test}/ (see _base_/datasets/raster_scenes.py;
# _base_/datasets/mask_folder_example.py is the layout for scenes already cut into tiles).
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/fcdensenet67.py",
    "_base_/datasets/raster_scenes.py",
    "_base_/schedules/tiramisu_camvid.py",
]
network.update(num_classes=len(classes), in_chans=4)
model = dict(
    type="Segmentor",
    model=network,
    loss=dict(
        type="CombinedLoss",
        losses=[dict(type="CrossEntropyLoss"), dict(type="DiceLoss")],  # both ignore the model's ignore_index
        weights=[1.0, 0.5],
    ),
    ignore_index=255,
)
train_dataloader = dict(batch_size=4, num_workers=2, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=1, num_workers=2, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(type="SegmentationMetric")  # classes and the void label come from the dataset
test_evaluator = val_evaluator
