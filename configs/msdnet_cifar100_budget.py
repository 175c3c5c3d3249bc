# MSDNet for budgeted batch classification on CIFAR-100 (Huang et al., ICLR 2018): 5 exits after blocks of 1-2-3-4-5
# layers, 2,078,924 parameters, 6.9 M multiply-adds per image at the first exit to 58.5 M at the last; the anytime
# config's recipe and data. Exit thresholds are calibrated on a validation split held out from training (the authors'
# --use-valid: 5000 of the 50000 training images, drawn by a seeded permutation; CIFAR100Folder's split="val") and
# applied to test (tools/test.py runs the budget sweep: densevision.early_exit.budget).
_base_ = ["msdnet_cifar100_anytime.py"]
held_out = dict(val_size=5000, split_seed=0)
train_dataset = dict(type="CIFAR100Folder", root=data_root, split="train", pipeline=train_pipeline, **held_out)
val_dataset = dict(type="CIFAR100Folder", root=data_root, split="val", pipeline=test_pipeline, **held_out)
model = dict(model=dict(type="msdnet_cifar_budget"))
train_dataloader = dict(dataset=train_dataset)
val_dataloader = dict(dataset=val_dataset)
