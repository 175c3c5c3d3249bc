# ImageNet-1k as class folders: data/imagenet/{train,val}/<wnid>/*.JPEG (val sorted into class folders).
# Training: RandomResizedCrop 224 + flip; evaluation: shorter side 256, centre crop 224 (torchvision's recipe).
data_root = "data/imagenet"
normalize = dict(type="Normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
train_pipeline = [
    dict(type="RandomResizedCrop", size=(224, 224)),
    dict(type="HorizontalFlip", p=0.5),
    normalize,
]
test_pipeline = [
    dict(type="SmallestMaxSize", max_size=256),
    dict(type="CenterCrop", height=224, width=224),
    normalize,
]
train_dataset = dict(type="ImageFolderDataset", root=f"{data_root}/train", pipeline=train_pipeline)
val_dataset = dict(type="ImageFolderDataset", root=f"{data_root}/val", pipeline=test_pipeline)
test_dataset = val_dataset
train_dataloader = dict(batch_size=64, num_workers=8, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=64, num_workers=8, shuffle=False, dataset=val_dataset)
test_dataloader = val_dataloader
