# FC-DenseNet67 (Jégou et al. 2017): 5 layers per block, growth 16, 3,463,243 parameters at 11 classes.
network = dict(type="fcdensenet67", num_classes=11, in_chans=3, drop_rate=0.2, memory_efficient=False)
