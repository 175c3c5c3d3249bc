# MSDNet for anytime prediction on CIFAR-100 (Huang et al., ICLR 2018; the authors' kalviny/MSDNet-PyTorch): 7 exits,
# 3,067,960 parameters, 15.1 M multiply-adds per image at the first exit to 75.9 M at the last. All exits trained
# jointly, their cross-entropies summed with equal weights; checkpoints follow the last exit's top-1. The authors'
# recipe: SGD lr 0.1, momentum 0.9, weight decay 1e-4 on all weights, batch 64, 300 epochs, lr / 10 at 150 and 225.
# Data: CIFAR-100's python batches in data/cifar100/cifar-100-python/{train,test,meta} (unpacked
# cifar-100-python.tar.gz; never downloaded), the 100 fine labels; all 50000 training images train (val_size=0).
_base_ = ["_base_/default_runtime.py", "_base_/schedules/sgd_multistep.py"]
data_root = "data/cifar100"
normalize = dict(type="Normalize", mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))
train_pipeline = [
    dict(type="PadIfNeeded", min_height=40, min_width=40, border_mode=0, fill=0),
    dict(type="RandomCrop", height=32, width=32),
    dict(type="HorizontalFlip", p=0.5),
    normalize,
]
test_pipeline = [normalize]
train_dataset = dict(type="CIFAR100Folder", root=data_root, split="train", val_size=0, pipeline=train_pipeline)
test_dataset = dict(type="CIFAR100Folder", root=data_root, split="test", pipeline=test_pipeline)
val_dataset = test_dataset  # the anytime setting has no held-out split (as the authors' run without --use-valid)
model = dict(type="EarlyExitClassifier", model=dict(type="msdnet_cifar_anytime", num_classes=100))
train_dataloader = dict(batch_size=64, num_workers=2, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=256, num_workers=2, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=256, num_workers=2, shuffle=False, dataset=test_dataset)
val_evaluator = dict(type="EarlyExitAccuracy", topk=(1, 5))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(nesterov=False), paramwise=dict(norm_decay_mult=1.0, bias_decay_mult=1.0))
checkpoint = dict(monitor="top1", mode="max")
