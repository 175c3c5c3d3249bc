# A pluggable decoder for real: the Tiramisu dense upsampling decoder on the ImageNet DenseNet-121 encoder, trained on
# CamVid with the Tiramisu recipe; memory-efficient dense blocks keep the training step small.
_base_ = ["_base_/camvid_segmentation.py", "_base_/models/densenet121_tiramisu.py"]
network.update(memory_efficient=True)
model = dict(type="Segmentor", model=network, ignore_index=11)  # CE over non-void pixels (the default loss)
