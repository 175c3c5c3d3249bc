# DenseNet on ImageNet/CIFAR (Huang et al. 2017): SGD momentum 0.9 (Nesterov), weight decay 1e-4, lr 0.1 divided by
# 10 at 50% and 75% of training.
optim_wrapper = dict(
    optimizer=dict(type="SGD", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    paramwise=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [dict(type="MultiStepLR", milestones=[150, 225], gamma=0.1, by_epoch=True)]
train_cfg = dict(max_epochs=300, val_interval=1)
