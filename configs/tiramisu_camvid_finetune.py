# Second stage of the Tiramisu recipe: fine-tune FC-DenseNet103 on full 360x480 CamVid images (flips only), RMSprop
# lr 1e-4, batch 1, starting from the best checkpoint of `python tools/train.py configs/tiramisu_camvid.py`.
_base_ = "tiramisu_camvid.py"
load_from = "work_dirs/tiramisu_camvid/best.pth"
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=[dict(type="HorizontalFlip", p=0.5), normalize]))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
