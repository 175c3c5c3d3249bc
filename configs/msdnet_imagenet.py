# MSDNet on ImageNet-1k (Huang et al., ICLR 2018; kalviny/MSDNet-PyTorch): 5 exits after blocks of 4 layers, four
# scales, growth 16, 23,958,440 parameters, 0.34 G multiply-adds per image at the first exit to 1.36 G at the last.
# All exits trained jointly (equal weights); checkpoints follow the last exit's top-1. The authors' recipe: SGD lr 0.1,
# momentum 0.9, weight decay 1e-4 on all weights, global batch 256, 90 epochs, lr / 10 every 30
# (torchrun --nproc_per_node 4 tools/train.py configs/msdnet_imagenet.py --launcher pytorch: 64 per GPU).
# Data: data/imagenet/{train,val}/<class>/*.JPEG; for budgeted evaluation the authors calibrate thresholds on 50000
# training images held out from training.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/imagenet.py"]
model = dict(type="EarlyExitClassifier", model=dict(type="msdnet_imagenet", num_classes=1000))
train_dataloader = dict(batch_size=64, num_workers=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=64, num_workers=8, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(type="EarlyExitAccuracy", topk=(1, 5))
test_evaluator = val_evaluator
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4),
    paramwise=dict(norm_decay_mult=1.0, bias_decay_mult=1.0),
)
param_scheduler = [dict(type="MultiStepLR", milestones=[30, 60], gamma=0.1, by_epoch=True)]
train_cfg = dict(max_epochs=90, val_interval=1)
checkpoint = dict(monitor="top1", mode="max")
# Decoding 1.3 M images before every run would take hours: check once with tools/check_dataset.py instead.
check_datasets = False
