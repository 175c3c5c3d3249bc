# A linear warm-up over 5 epochs, then cosine annealing to zero over the remaining epochs.
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=True, begin=0, end=5),
    dict(type="CosineAnnealingLR", eta_min=0.0, by_epoch=True, begin=5, end=100),
]
train_cfg = dict(max_epochs=100, val_interval=1)
