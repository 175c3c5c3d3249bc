# A pluggable decoder for real: the Tiramisu dense upsampling decoder on the ImageNet DenseNet-121 encoder, trained on
# CamVid with the Tiramisu recipe (memory-efficient dense blocks keep the 224x224, batch-3 step small).
_base_ = ["tiramisu_camvid.py", "_base_/models/densenet121_tiramisu.py"]
model = dict(model={**network, "memory_efficient": True, "_delete_": True})
