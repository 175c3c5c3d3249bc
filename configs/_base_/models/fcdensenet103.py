# FC-DenseNet103 (Jégou et al. 2017): blocks 4,5,7,10,12 | 15 | 12,10,7,5,4, growth 16, 9,322,091 parameters
# at 11 classes.
network = dict(type="fcdensenet103", num_classes=11, in_chans=3, drop_rate=0.2, memory_efficient=False)
