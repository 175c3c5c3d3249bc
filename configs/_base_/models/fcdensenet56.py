# FC-DenseNet56 (Jégou et al. 2017): 4 layers per block, growth 12, 1,376,795 parameters at 11 classes.
network = dict(type="fcdensenet56", num_classes=11, in_chans=3, drop_rate=0.2, memory_efficient=False)
