# FC-DenseNet103 (Jégou et al. 2017) trained from scratch on the Medical Segmentation Decathlon's spleen CT task
# (Task09_Spleen, data/msd/Task09_Spleen; see _base_/datasets/msd_spleen.py) on 2.5D axial slices (5 channels), with
# the paper's recipe: RMSprop 1e-3 x 0.995 per epoch, weight decay 1e-4 on weights only, 224x224 crops, batch 3, early
# stopping (patience 150 evaluations), here on the validation volumes' mean Dice. Cross-entropy + Dice: the spleen
# covers about 0.5 % of the voxels. Evaluation: Dice and HD95 (mm) per volume, on the 8 held-out training volumes.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/fcdensenet103.py",
    "_base_/datasets/msd_spleen.py",
    "_base_/schedules/tiramisu_camvid.py",
]
network.update(num_classes=2, in_chans=5, memory_efficient=True)
model = dict(
    type="Segmentor",
    model=network,
    loss=dict(type="CombinedLoss", losses=[dict(type="CrossEntropyLoss"), dict(type="DiceLoss")], weights=[1.0, 1.0]),
    ignore_index=255,
)
val_evaluator = dict(type="VolumeSegmentationMetric")  # classes (background, spleen) come from dataset.json
test_evaluator = val_evaluator
checkpoint = dict(monitor="mDice", mode="max")
early_stopping = dict(monitor="mDice", patience=150, mode="max")
