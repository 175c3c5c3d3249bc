# DSOD300 (Shen et al., ICCV 2017) trained from scratch on VOC2007+2012 trainval, tested on VOC2007 test (paper:
# 77.7 mAP at 14.8 M parameters). Data: data/VOCdevkit (see _base_/datasets/voc0712_detection.py).
# Small per-GPU batches hurt BatchNorm (the paper gets 78.9 with larger ones): with several GPUs set sync_bn=True, or
# model.model.norm_layer="GroupNorm"; model.model.memory_efficient=True fits larger batches.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/voc0712_detection.py", "_base_/schedules/dsod_from_scratch.py"]
model = dict(type="Detector", model=dict(type="dsod300", num_classes=21, memory_efficient=False))
