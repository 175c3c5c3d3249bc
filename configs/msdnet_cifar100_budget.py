# MSDNet for budgeted batch classification on CIFAR-100 (Huang et al., ICLR 2018): 5 exits after blocks of 1-2-3-4-5
# layers, 2,078,924 parameters, 6.9 M multiply-adds per image at the first exit to 58.5 M at the last; the anytime
# config's recipe and data. Exit thresholds are calibrated on a validation split held out from training (the authors'
# --use-valid: 5000 of the 50000 training images), data/cifar100/{train,val,test}/<class>/*.png, and applied to test
# (densevision.early_exit.budget).
_base_ = ["msdnet_cifar100_anytime.py"]
val_dataset = dict(type="ImageFolderDataset", root=f"{data_root}/val", pipeline=test_pipeline)
model = dict(model=dict(type="msdnet_cifar_budget"))
val_dataloader = dict(dataset=val_dataset)
