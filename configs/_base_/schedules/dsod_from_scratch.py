# DSOD's recipe (Shen et al. 2017) for detectors trained from scratch: SGD momentum 0.9, weight decay 5e-4, lr 0.1
# divided by 10 after 20k, 40k, 60k and 80k iterations, 100k iterations, effective batch 128. An "iteration" there is
# one optimizer step of 128 images; here the runner counts batches, so with 8 images per batch and 16 accumulation
# steps the milestones and the length are multiplied by 16. On N GPUs divide accumulate_steps by N (8 x N x 16/N).
# Added to the paper: a linear warm-up over the first 1k steps and gradient clipping, the usual cures for the NaN
# losses that from-scratch detectors hit early (the run log names the iteration if one happens anyway).
accumulate_steps = 16  # 8 per batch x 16 = 128 images per optimizer step on one GPU
optim_wrapper = dict(
    optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=5e-4),
    paramwise=dict(norm_decay_mult=1.0, bias_decay_mult=1.0),  # Caffe's default: decay on every parameter
    accumulate_steps=accumulate_steps,
    clip_grad=dict(max_norm=35.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=1_000 * accumulate_steps),
    dict(
        type="MultiStepLR",
        milestones=[steps * accumulate_steps for steps in (20_000, 40_000, 60_000, 80_000)],
        gamma=0.1,
        by_epoch=False,
    ),
]
train_cfg = dict(max_epochs=None, max_iters=100_000 * accumulate_steps, val_interval=10)
checkpoint = dict(monitor="mAP", mode="max")
