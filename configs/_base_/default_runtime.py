# Runtime defaults every top-level config inherits: every key the Runner reads, with its default value.
# Models, datasets and schedules come from the other _base_ files; overrides: --cfg-options key.sub=value
# (+key.sub=value adds a key the configs do not state).

custom_imports = []  # modules of your own (tasks, datasets, metrics, predictors) every tool imports first
work_dir = None  # None: tools/train.py uses work_dirs/<config file name>; --work-dir overrides
seed = 0  # seeds Python, NumPy and torch; data-loader workers get per-rank, per-worker seeds derived from it
deterministic = False  # True: deterministic kernels where torch has them (slower; warns where it has none)
device = None  # None: CUDA when available (the GPU of the local rank), else CPU; or 'cpu' / 'cuda'
launcher = "none"  # 'pytorch' under torchrun (tools/train.py --launcher pytorch); NCCL on CUDA, gloo on CPU
sync_bn = False  # BatchNorm -> SyncBatchNorm across processes (CUDA only; small per-GPU batches)
# None, 'auto' (work_dir/last.pth when present) or a checkpoint path; --resume sets it. None refuses a work_dir that
# already holds a run (last.pth, best.pth or training records in metrics.jsonl) instead of overwriting it. A resumed run
# restores weights, optimizer moments, counters, RNG states and loader order, but takes the optimizer hyper-parameters
# (per param group) and param_scheduler of the config it is resumed with, logging each value that differs from the
# checkpoint's config; records of the interrupted epoch are dropped from metrics.jsonl. Resuming a finished run
# (max_epochs / max_iters reached, or stopped early) only says so.
resume = None
check_datasets = True  # read every train/val file before training (bad data fails now); False for huge sets
load_from = None  # a checkpoint whose model weights start training (fine-tuning); ignored when resuming

# Loaders: batch_size is per process (global batch = batch_size x processes); shuffle applies to training only, and
# follows seed + epoch, so a resumed run sees the same order (and the same worker seeds, unless persistent_workers);
# pin_memory is used on CUDA only.
train_dataloader = dict(
    batch_size=4, num_workers=2, shuffle=True, pin_memory=True, drop_last=False, persistent_workers=False, dataset=None
)
val_dataloader = None  # same keys as train_dataloader; None: no validation during training
test_dataloader = None
val_evaluator = None  # a metric from METRICS, e.g. dict(type='SegmentationMetric', ...)
test_evaluator = None

optim_wrapper = dict(
    optimizer=dict(type="RMSprop", lr=1e-3, weight_decay=1e-4),  # any torch.optim optimizer by name
    paramwise=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),  # no weight decay on norm layers and biases
    accumulate_steps=1,  # step every k batches (and at the end of each epoch): k batches of n act as one of k*n
    clip_grad=None,  # or dict(max_norm=..., norm_type=2.0): clip the gradient norm before each step
    # None, 'bf16' or 'fp16': the forward in autocast, losses in float32. bf16 on CUDA and on CPUs with native bf16
    # (AVX512-BF16, AMX, Arm BF16; elsewhere float32 with a warning); fp16 (GradScaler) on CUDA, float32 on CPU.
    amp=None,
)
# LR schedulers from torch.optim.lr_scheduler, chained (each multiplies the LR). by_epoch=True steps after every
# epoch, False after every training iteration (batch); each runs on [begin, end) in those units, and a finite end
# fills total_iters / T_max when not given. See configs/_base_/schedules/.
param_scheduler = []

# One of max_epochs or max_iters (batches, the last epoch cut short; set max_epochs=None); evaluate every val_interval
# epochs and at the end. A DatasetError raised while loading a sample (unreadable file, label outside the classes)
# stops the run with its own one-line message; skip_bad_samples=True replaces such a training sample by the next good
# one instead and logs, per epoch, how many were skipped and the first few (validation never skips).
# compile: False, True or a dict of torch.compile options (e.g. dict(mode='reduce-overhead'): CUDA graphs, for fixed
# input shapes; other shapes recompile without them) for the task's network and loss; channels_last: NHWC parameters
# and images (tensor cores). Both keep checkpoints and resume as in eager runs (densevision/engine/acceleration.py).
# cudnn_benchmark: cuDNN times its algorithms per input shape and keeps the fastest (a resumed run is then no longer
# bit-exact on GPUs).
train_cfg = dict(
    max_epochs=100,
    max_iters=None,
    val_interval=1,
    skip_bad_samples=False,
    compile=False,
    channels_last=False,
    cudnn_benchmark=False,
)
checkpoint = dict(monitor=None, mode="max")  # e.g. monitor='mIoU': also keep best.pth; last.pth is written every epoch
early_stopping = None  # e.g. dict(monitor='mIoU', patience=150, mode='max', min_delta=0.0): patience in evaluations
log_interval = 10  # iterations between metrics.jsonl / TensorBoard training records
visualization = dict(num_samples=4)  # sample predictions drawn at each evaluation (work_dir/predictions/)
