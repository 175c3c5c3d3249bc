# FC-DenseNet56 (4 layers per block, growth 12; 1.4 M parameters) on CamVid with the Tiramisu recipe.
_base_ = "tiramisu_camvid.py"
model = dict(model=dict(type="fcdensenet56"))
