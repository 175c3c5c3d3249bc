# FC-DenseNet67 (5 layers per block, growth 16; 3.5 M parameters) on CamVid with the Tiramisu recipe.
_base_ = "tiramisu_camvid.py"
model = dict(model=dict(type="fcdensenet67"))
