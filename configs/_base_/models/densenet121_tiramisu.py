# Tiramisu dense upsampling decoder on the ImageNet DenseNet-121 encoder (skips at strides 2-16, deepest map at 32).
# The decoder"s logits come out at stride 2 and are upsampled bilinearly to the input size by EncoderDecoder.
network = dict(
    type="EncoderDecoder",
    encoder=dict(type="densenet121", out_indices=(0, 1, 2, 3, 4)),
    decoder=dict(type="TiramisuDecoder", bottleneck_layers=15, up_layers=(12, 10, 7, 5), growth_rate=16, drop_rate=0.2),
    num_classes=11,
    in_chans=3,
    memory_efficient=False,
)
