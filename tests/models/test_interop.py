import functools
import re
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision
from torchvision.models.detection import FasterRCNN

import densevision
from densevision.models import interop
from densevision.models.interop import (
    DenseNetBackbone,
    DenseNetFPNBackbone,
    SmpDenseNetEncoder,
    StateDictMismatchError,
    adapt_input_conv,
    densenet_backbone,
    densenet_fpn_backbone,
    load_torchvision_weights,
    register_smp_encoders,
    remap_legacy_keys,
)
from densevision.registry import BACKBONES

TINY = dict(growth_rate=4, block_config=(2, 1, 1, 2), stem_channels=8)


def _torchvision_tiny(num_classes: int = 5) -> torchvision.models.DenseNet:
    model = torchvision.models.DenseNet(
        growth_rate=4, block_config=(2, 1, 1, 2), num_init_features=8, num_classes=num_classes
    )
    _randomise_norms(model)
    return model.eval()


def _randomise_norms(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so loading them wrongly would show in the outputs."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.weight, module.bias, module.running_mean):
                tensor.data = torch.randn(tensor.shape, generator=generator) * 0.2 + (
                    1 if tensor is module.weight else 0
                )
            module.running_var.data = torch.rand(module.running_var.shape, generator=generator) + 0.5


def _tiny(**kwargs) -> torch.nn.Module:
    return densevision.create_model("densenet121", **TINY, **kwargs).eval()


def test_torchvision_densenet121_state_dict_loads_as_is_with_same_logits():
    theirs = torchvision.models.densenet121(weights=None)
    _randomise_norms(theirs)
    theirs.eval()
    ours = densevision.create_model("densenet121", num_classes=1000).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


def _legacy(state_dict):
    """A pre-0.3 torchvision checkpoint: ``norm.1``-style keys and no BatchNorm ``num_batches_tracked``."""
    return {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key): value
        for key, value in state_dict.items()
        if not key.endswith("num_batches_tracked")
    }


def test_legacy_keys_are_remapped():
    state_dict = _torchvision_tiny().state_dict()
    legacy = _legacy(state_dict)
    assert "features.denseblock1.denselayer1.norm.1.running_mean" in legacy
    assert list(remap_legacy_keys(legacy)) == [key for key in state_dict if not key.endswith("num_batches_tracked")]


@pytest.mark.parametrize("source_kind", ["state_dict", "legacy_state_dict", "file", "wrapped_ddp_file"])
def test_load_torchvision_weights_sources_give_same_logits(source_kind, tmp_path):
    theirs = _torchvision_tiny()
    state_dict = theirs.state_dict()
    if source_kind == "legacy_state_dict":
        source = _legacy(state_dict)
    elif source_kind == "state_dict":
        source = state_dict
    else:
        path = tmp_path / "weights.pth"
        if source_kind == "wrapped_ddp_file":
            state_dict = {"state_dict": {f"module.{key}": value for key, value in state_dict.items()}, "epoch": 3}
        torch.save(state_dict, path)
        source = str(path)
    ours = load_torchvision_weights(_tiny(num_classes=5), source)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


def test_load_never_downloads_and_names_missing_files(tmp_path):
    with pytest.raises(ValueError, match="local files only"):
        load_torchvision_weights(_tiny(), "https://download.pytorch.org/models/densenet121-a639ec97.pth")
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_torchvision_weights(_tiny(), missing)


@pytest.mark.parametrize("in_chans", [1, 6])
def test_in_chans_adaptation_keeps_the_response_to_grey_images(in_chans):
    theirs = _torchvision_tiny()
    ours = load_torchvision_weights(_tiny(num_classes=5, in_chans=in_chans), theirs.state_dict())
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = theirs(grey.expand(-1, 3, -1, -1))
        assert (ours(grey.expand(-1, in_chans, -1, -1)) - expected).abs().max().item() <= 1e-5


def test_adapt_input_conv_repeats_and_scales():
    weight = torch.randn(8, 3, 7, 7)
    adapted = adapt_input_conv(weight, 4)
    assert adapted.shape == (8, 4, 7, 7)
    torch.testing.assert_close(adapted[:, :3], weight * 0.75)
    torch.testing.assert_close(adapted[:, 3], weight[:, 0] * 0.75)
    torch.testing.assert_close(adapt_input_conv(weight, 1), weight.sum(1, keepdim=True))
    assert adapt_input_conv(weight, 3) is weight
    with pytest.raises(ValueError, match="4-D"):
        adapt_input_conv(torch.randn(8, 3), 1)


def test_classifier_of_another_size_is_dropped_only_when_asked():
    theirs = _torchvision_tiny(num_classes=1000)
    with pytest.raises(StateDictMismatchError, match=r"classifier\.weight: weights \(1000, 13\) vs model \(10, 13\)"):
        load_torchvision_weights(_tiny(num_classes=10), theirs.state_dict())

    ours = _tiny(num_classes=10)
    fresh_classifier = ours.classifier.weight.clone()
    load_torchvision_weights(ours, theirs.state_dict(), drop_mismatched_classifier=True)
    assert torch.equal(ours.classifier.weight, fresh_classifier)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ours.forward_features(x), torch.relu(theirs.features(x)))


def test_mismatch_error_lists_missing_unexpected_and_misshaped_keys():
    state_dict = _torchvision_tiny().state_dict()
    del state_dict["features.norm5.running_var"]
    state_dict["features.extra.weight"] = torch.zeros(1)
    state_dict["features.conv0.weight"] = torch.zeros(9, 3, 7, 7)
    with pytest.raises(StateDictMismatchError) as error:
        load_torchvision_weights(_tiny(num_classes=5), state_dict)
    message = str(error.value)
    assert "missing keys ['features.norm5.running_var']" in message
    assert "unexpected keys ['features.extra.weight']" in message
    assert "features.conv0.weight: weights (9, 3, 7, 7) vs model (8, 3, 7, 7)" in message


def test_encoder_loads_torchvision_weights_and_matches_smp_features():
    theirs = _torchvision_tiny()
    encoder = load_torchvision_weights(_tiny(out_indices=(0, 1, 2, 3, 4)), theirs.state_dict())
    reference = smp.encoders.densenet.DenseNetEncoder(
        out_channels=[3, 8, 16, 12, 10, 13], growth_rate=4, block_config=(2, 1, 1, 2), num_init_features=8
    ).eval()
    reference.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, expected = encoder(x), reference(x)[1:]
    for feature, reference_feature in zip(ours[:4], expected[:4], strict=True):
        torch.testing.assert_close(feature, reference_feature)
    torch.testing.assert_close(ours[4], torch.relu(expected[4]))  # densevision takes the last after norm5's ReLU


def test_fpn_backbone_in_faster_rcnn_eval_and_train_step():
    torch.manual_seed(0)
    backbone = densenet_fpn_backbone("densenet121", **TINY, out_channels=16)
    assert isinstance(backbone, DenseNetFPNBackbone) and backbone.out_channels == 16
    assert BACKBONES.get("densenet_fpn_backbone") is densenet_fpn_backbone
    features = backbone(torch.randn(1, 3, 64, 64))
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "0": (1, 16, 16, 16),
        "1": (1, 16, 8, 8),
        "2": (1, 16, 4, 4),
        "3": (1, 16, 2, 2),
        "pool": (1, 16, 1, 1),
    }

    detector = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=96).eval()
    with torch.no_grad():
        (prediction,) = detector([torch.rand(3, 64, 80)])
    assert set(prediction) == {"boxes", "labels", "scores"} and prediction["boxes"].shape[1] == 4

    detector.train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0]]), "labels": torch.tensor([2])},
    ]
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert backbone.body.features.conv0.weight.grad.abs().sum() > 0


def test_fpn_backbone_loads_weights_and_needs_an_encoder():
    theirs = _torchvision_tiny()
    backbone = densenet_fpn_backbone("densenet121", **TINY, weights=theirs.state_dict())
    assert torch.equal(backbone.body.features.conv0.weight, theirs.features.conv0.weight)
    with pytest.raises(ValueError, match="out_indices"):
        DenseNetFPNBackbone(_tiny())


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_detector_examples() -> list[str]:
    section = README.read_text().split("### DenseNet backbones in torchvision's detectors")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_the_three_detector_examples():
    examples = _readme_detector_examples()
    assert len(examples) == 3
    assert ["FasterRCNN(" in e and "RetinaNet(" not in e for e in examples] == [True, False, True]
    assert "densenet_backbone(" in examples[2] and "out_channels" not in examples[2]


@pytest.mark.parametrize("example", [0, 1, 2], ids=["faster_rcnn_fpn", "retinanet_fpn", "faster_rcnn_single_map"])
def test_readme_detector_example_trains_and_predicts(example, monkeypatch):
    """Each README example as written, on a tiny-width DenseNet-121 and 64-px images."""
    for builder in ("densenet_backbone", "densenet_fpn_backbone"):
        monkeypatch.setattr(interop, builder, functools.partial(getattr(interop, builder), **TINY))
    namespace: dict = {}
    torch.manual_seed(0)
    exec(_readme_detector_examples()[example], namespace)
    model, backbone = namespace["model"], namespace["backbone"]
    model.transform.min_size, model.transform.max_size = (64,), 96

    model.train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0]]), "labels": torch.tensor([2])},
    ]
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and len(losses) >= 2
    total.backward()
    assert backbone.body.features.conv0.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        (prediction,) = model([torch.rand(3, 64, 80)])
    assert set(prediction) == {"boxes", "labels", "scores"} and prediction["boxes"].shape[1] == 4


@pytest.mark.parametrize(("out_index", "channels", "stride"), [(4, 13, 32), (2, 12, 8)])
def test_single_map_backbone_sets_out_channels(out_index, channels, stride):
    backbone = densenet_backbone("densenet121", **TINY, out_index=out_index)
    assert isinstance(backbone, DenseNetBackbone) and BACKBONES.get("densenet_backbone") is densenet_backbone
    features = backbone(torch.randn(1, 3, 64, 64))
    assert backbone.out_channels == channels and features.shape == (1, channels, 64 // stride, 64 // stride)


def test_single_map_backbone_loads_weights_and_needs_one_map():
    theirs = _torchvision_tiny()
    backbone = densenet_backbone("densenet121", **TINY, weights=theirs.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), torch.relu(theirs.features(x)))
    with pytest.raises(ValueError, match="one out_index"):
        DenseNetBackbone(_tiny(out_indices=(3, 4)))


def test_smp_unet_with_densevision_encoder():
    names = register_smp_encoders()
    assert "densevision_densenet121" in names and "densevision_densenet121" in smp.encoders.get_encoder_names()
    model = smp.Unet(encoder_name="densevision_densenet121", encoder_weights=None, classes=3).eval()
    assert isinstance(model.encoder, SmpDenseNetEncoder)
    assert model.encoder.out_channels == [3, 64, 256, 512, 1024, 1024] and model.encoder.output_stride == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)

    # a drop-in for smp's own densenet121 encoder: same state_dict, same predictions
    reference = smp.Unet(encoder_name="densenet121", encoder_weights=None, classes=3).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5


def test_smp_encoder_options():
    register_smp_encoders()  # the DeepLabV3Plus check below needs the plain names, whichever test ran first
    register_smp_encoders(prefix="densevision_me_", memory_efficient=True)
    model = smp.Unet(
        encoder_name="densevision_me_densenet121",
        encoder_weights=None,
        encoder_depth=3,
        decoder_channels=(32, 16, 8),
        in_channels=1,
        classes=2,
    )
    assert model.encoder.out_channels == [1, 64, 256, 512] and model.encoder.in_chans == 1
    assert all(layer.memory_efficient for layer in model.encoder.features.denseblock1.values())
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    with pytest.raises(ValueError, match="cannot be dilated"):
        smp.DeepLabV3Plus(encoder_name="densevision_densenet121", encoder_weights=None)
