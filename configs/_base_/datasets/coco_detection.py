# COCO 2017 for detection: train2017 (crowd boxes left out of the targets), val2017 evaluated with pycocotools'
# COCOeval (AP@[.5:.95], AP50, AP75, APs/m/l, AR). Layout: data/coco/{annotations/instances_*.json,train2017,val2017}.
_base_ = ["../ssd_augmentation.py"]
data_root = "data/coco"
train_dataset = dict(
    type="CocoDetection",
    ann_file=f"{data_root}/annotations/instances_train2017.json",
    img_dir=f"{data_root}/train2017",
    skip_empty=True,
    pipeline=train_pipeline,
)
val_dataset = dict(
    type="CocoDetection",
    ann_file=f"{data_root}/annotations/instances_val2017.json",
    img_dir=f"{data_root}/val2017",
    pipeline=test_pipeline,
)
test_dataset = val_dataset
train_dataloader = dict(batch_size=8, num_workers=4, shuffle=True, drop_last=True, dataset=train_dataset)
val_dataloader = dict(batch_size=16, num_workers=4, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(type="CocoMetric", ann_file=f"{data_root}/annotations/instances_val2017.json")
test_evaluator = val_evaluator
check_datasets = False  # 118k images: check once with tools/check_dataset.py
