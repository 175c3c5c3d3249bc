# DenseNet-BC (L=100, k=12; 0.8 M parameters) on CIFAR-10 with standard augmentation (paper: 4.51 % error):
# SGD lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4, batch 64, 300 epochs, lr / 10 at epochs 150 and 225.
# Data: data/cifar10/cifar-10-batches-py/ (the unpacked python release; nothing is downloaded).
_base_ = ["_base_/default_runtime.py", "_base_/datasets/cifar10.py", "_base_/schedules/sgd_multistep.py"]
model = dict(type="Classifier", model=dict(type="densenet_bc", depth=100, growth_rate=12, num_classes=10))
train_dataloader = dict(batch_size=64, num_workers=2, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=256, num_workers=2, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
val_evaluator = dict(type="Accuracy", topk=(1, 5))
test_evaluator = val_evaluator
optim_wrapper = dict(paramwise=dict(norm_decay_mult=1.0, bias_decay_mult=1.0))
checkpoint = dict(monitor="top1", mode="max")
