# "poly" decay (DeepLab-style segmentation): lr x (1 - iteration / total) ** 0.9, stepped every iteration.
# end is the total number of iterations (epochs x iterations per epoch); adjust it to the dataset and batch size.
param_scheduler = [dict(type="PolynomialLR", power=0.9, by_epoch=False, begin=0, end=40000)]
