# SSD's augmentation for detectors at 300x300 (Liu et al. 2016, used by DSOD): photometric distortion, zoom-out up to
# 4x filled with the mean, min-IoU random crop, resize to 300x300, horizontal flip; evaluation only resizes (boxes are
# mapped back to each image's own pixels). Dataset bases (voc0712_detection.py, coco_detection.py) build on it.
image_size = 300
normalize = dict(type="Normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
train_pipeline = [
    dict(type="PhotometricDistort"),
    dict(type="Expand", fill=(123.675, 116.28, 103.53), max_ratio=4.0, p=0.5),
    dict(type="MinIoURandomCrop"),
    dict(type="Resize", height=image_size, width=image_size),
    dict(type="HorizontalFlip", p=0.5),
    normalize,
]
test_pipeline = [dict(type="Resize", height=image_size, width=image_size), normalize]
