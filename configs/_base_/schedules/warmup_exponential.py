# A linear warm-up over the first 500 iterations, then lr x 0.995 per epoch (both chained on one optimizer).
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=500),
    dict(type="ExponentialLR", gamma=0.995, by_epoch=True),
]
