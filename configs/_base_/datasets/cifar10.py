# CIFAR-10 from the python batches in data/cifar10/cifar-10-batches-py/ (unpacked cifar-10-python.tar.gz; never
# downloaded). Training: 4-pixel zero padding + random 32x32 crop + flip. CIFAR-10 has no validation split: val = test.
data_root = "data/cifar10"
normalize = dict(type="Normalize", mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
train_pipeline = [
    dict(type="PadIfNeeded", min_height=40, min_width=40, border_mode=0, fill=0),
    dict(type="RandomCrop", height=32, width=32),
    dict(type="HorizontalFlip", p=0.5),
    normalize,
]
test_pipeline = [normalize]
train_dataset = dict(type="CIFAR10Folder", root=data_root, split="train", pipeline=train_pipeline)
val_dataset = dict(type="CIFAR10Folder", root=data_root, split="test", pipeline=test_pipeline)
test_dataset = val_dataset
train_dataloader = dict(batch_size=64, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=128, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
