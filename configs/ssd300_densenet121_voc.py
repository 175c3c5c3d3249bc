# SSD300 on the densevision DenseNet-121 encoder (features at strides 8, 16 and 32, then extra Conv1x1-Conv3x3/2
# layers down to 2x2), trained from scratch on VOC07+12 with DSOD's from-scratch recipe: nothing is downloaded.
# To start from ImageNet weights you have on disk, fine-tune with load_from (see densevision.models.interop).
_base_ = ["_base_/default_runtime.py", "_base_/datasets/voc0712_detection.py", "_base_/schedules/dsod_from_scratch.py"]
model = dict(type="Detector", model=dict(type="ssd300_densenet121", num_classes=21, memory_efficient=True))
