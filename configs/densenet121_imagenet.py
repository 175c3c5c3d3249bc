# DenseNet-121 on ImageNet-1k from scratch (Huang et al. 2017): SGD lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4
# on all weights, 90 epochs with lr / 10 at epochs 30 and 60, global batch 256 (32 per GPU x 8:
# torchrun --nproc_per_node 8 tools/train.py configs/densenet121_imagenet.py --launcher pytorch).
# Data: data/imagenet/{train,val}/<class>/*.JPEG.
_base_ = ["_base_/default_runtime.py", "_base_/datasets/imagenet.py"]
model = dict(type="Classifier", model=dict(type="densenet121", num_classes=1000))
train_dataloader = dict(batch_size=32, num_workers=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=64, num_workers=8, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(type="Accuracy", topk=(1, 5))
test_evaluator = val_evaluator
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type="SGD", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    paramwise=dict(norm_decay_mult=1.0, bias_decay_mult=1.0),
)
param_scheduler = [dict(type="MultiStepLR", milestones=[30, 60], gamma=0.1, by_epoch=True)]
train_cfg = dict(max_epochs=90, val_interval=1)
checkpoint = dict(monitor="top1", mode="max")
# Decoding 1.3 M images before every run would take hours: check once with tools/check_dataset.py instead.
check_datasets = False
