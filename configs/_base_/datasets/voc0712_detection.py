# Pascal VOC for detection, the DSOD/SSD protocol: train on VOC2007 trainval + VOC2012 trainval (16,551 images,
# difficult objects dropped from the targets), test on VOC2007 test (4,952 images, difficult objects kept and ignored
# by the metric). Layout: data/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}/ and the same for VOC2012.
# SSD augmentation from ../ssd_augmentation.py.
_base_ = ["../ssd_augmentation.py"]
data_root = "data/VOCdevkit"
train_dataset = dict(
    type="VOCDetection", root=data_root, years=("2007", "2012"), split="trainval", pipeline=train_pipeline
)
test_dataset = dict(
    type="VOCDetection", root=data_root, years=("2007",), split="test", skip_difficult=False, pipeline=test_pipeline
)
val_dataset = test_dataset
train_dataloader = dict(batch_size=8, num_workers=4, shuffle=True, drop_last=True, dataset=train_dataset)
val_dataloader = dict(batch_size=16, num_workers=4, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
# VOC2007's 11-point mAP@0.5 (the figure DSOD and SSD report); ap_method="area" gives the VOC2010+ all-point AP.
val_evaluator = dict(type="VOCMetric", ap_method="11point")
test_evaluator = val_evaluator
# Decoding 16,551 images before every run takes minutes: check once with tools/check_dataset.py instead.
check_datasets = False
