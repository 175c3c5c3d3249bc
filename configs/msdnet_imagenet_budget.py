# msdnet_imagenet.py for budgeted batch classification: exit thresholds are calibrated on 50,000 ImageNet training
# images held out from training (the authors' --use-valid; drawn by a seeded permutation, ImageFolderDataset's
# split="val") and applied to ImageNet's val folder, the test split (tools/test.py runs the budget sweep:
# densevision.early_exit.budget). Training sees the other 1,231,167 images and selects checkpoints on the held-out ones.
_base_ = ["msdnet_imagenet.py"]
held_out = dict(val_size=50000, split_seed=0)
train_dataset = dict(type="ImageFolderDataset", root=f"{data_root}/train", pipeline=train_pipeline, split="train",
                     **held_out)  # fmt: skip
val_dataset = dict(type="ImageFolderDataset", root=f"{data_root}/train", pipeline=test_pipeline, split="val",
                   **held_out)  # fmt: skip
test_dataset = dict(type="ImageFolderDataset", root=f"{data_root}/val", pipeline=test_pipeline)
train_dataloader = dict(dataset=train_dataset)
val_dataloader = dict(dataset=val_dataset)
test_dataloader = dict(batch_size=64, num_workers=8, shuffle=False, dataset=test_dataset)
