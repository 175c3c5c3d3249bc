# FC-DenseNet recipe (Jegou et al. 2017, authors' code): RMSprop lr 1e-3 x 0.995 per epoch, weight decay 1e-4 on
# weights only, up to 750 epochs with early stopping (patience 150) on validation mIoU; best.pth keeps the best epoch.
optim_wrapper = dict(
    optimizer=dict(type="RMSprop", lr=1e-3, weight_decay=1e-4),
    paramwise=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [dict(type="ExponentialLR", gamma=0.995, by_epoch=True)]
train_cfg = dict(max_epochs=750, val_interval=1)
checkpoint = dict(monitor="mIoU", mode="max")
early_stopping = dict(monitor="mIoU", patience=150, mode="max")
