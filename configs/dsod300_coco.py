# DSOD300 from scratch on COCO 2017 (paper: 29.3 AP on test-dev), evaluated on val2017 with COCOeval. The VOC schedule
# (_base_/schedules/dsod_from_scratch.py); REFERENCE gives no separate COCO schedule. Data: data/coco.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/coco_detection.py", "_base_/schedules/dsod_from_scratch.py"]
model = dict(type="Detector", model=dict(type="dsod300", num_classes=81, memory_efficient=False))
checkpoint = dict(monitor="AP", mode="max")
