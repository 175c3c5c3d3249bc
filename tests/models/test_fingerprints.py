"""Every model family builds the same network it built before the shared stage builder and norm/act resolver.

The figures were computed from the code before ``blocks.dense_stage`` and ``resolve_norm_act`` replaced the three
hand-written stage loops: key list and every tensor's bytes after ``torch.manual_seed(0)`` construction (a digest,
so initialisation and parameter-creation order are pinned bit for bit), and the sum and absolute sum of the outputs on
a fixed input (with a tolerance, so faster dense-block kernels that round differently still pass).
"""

import hashlib
from pathlib import Path

import pytest
import torch

import densevision
from densevision.config import Config
from densevision.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_DSOD = dict(
    num_classes=4,
    image_size=64,
    stem_channels=(8, 8, 16),
    growth_rate=4,
    block_config=(2, 1, 1, 2),
    extra_channels=(8, 8),
)
TINY_SSD_ENCODER = dict(type="densenet121", growth_rate=4, stem_channels=8, out_indices=(2, 3, 4))


def _config_network(path: str, *keys: str):
    def build():
        value = Config.fromfile(str(CONFIGS / path))
        for key in keys:
            value = value[key]
        return MODELS.build(value)

    return build


def _create(name: str, **kwargs):
    return lambda: densevision.create_model(name, **kwargs)


# name -> (builder, input shape, (parameters, key-list digest, state digest, output sum, output abs-sum))
CASES = {
    "densenet121": (
        _create("densenet121"),
        (1, 3, 64, 64),
        (7978856, "366ea3ff24f18b7c", "3b7cfd0287a19ba0", -11.958269439637661, 536.6426497623324),
    ),
    "densenet121_small_silu": (
        _create("densenet121", growth_rate=4, stem_channels=8, num_classes=5, act_layer=torch.nn.SiLU),
        (1, 3, 64, 64),
        (119477, "366ea3ff24f18b7c", "2b177fb1c560df2c", -0.10597310215234756, 0.36481863260269165),
    ),
    "densenet_bc100": (
        _create("densenet_bc"),
        (1, 3, 32, 32),
        (769162, "939ffa38ebf20101", "569eb2dd16da9675", 0.15790211968123913, 3.523414207622409),
    ),
    "densenet121_encoder": (
        _create("densenet121", growth_rate=4, stem_channels=8, out_indices=(0, 1, 2, 3, 4)),
        (1, 3, 64, 64),
        (118832, "a9dfdb712a353b30", "8b74f0135628edaa", 22330.77384810397, 22330.77384810397),
    ),
    "fcdensenet56": (
        _create("fcdensenet56"),
        (1, 3, 32, 32),
        (1376795, "6c6b1ea25e27c989", "131834cd84ac230d", 121.8041797861224, 1667.005740034976),
    ),
    "fcdensenet67": (
        _create("fcdensenet67"),
        (1, 3, 32, 32),
        (3463243, "fa7ed65b7b740d18", "8ad819d759d5bd91", 185.34570133313537, 1433.008516430622),
    ),
    "fcdensenet103": (
        _create("fcdensenet103"),
        (1, 3, 32, 32),
        (9322091, "1b6af4a50cdbfe0a", "1f148c654997350f", 84.41582832590211, 1333.318645267631),
    ),
    "dsod300": (
        _create("dsod300"),
        (1, 3, 300, 300),
        (14715804, "a863231344bb0760", "a3462c09233b0846", -6653.503530531866, 172750.07733608966),
    ),
    "dsod_tiny_groupnorm": (
        _create("DSOD", **TINY_DSOD, norm_layer=dict(type="GroupNorm", num_groups=4)),
        (2, 3, 64, 64),
        (30140, "9784d11c3afe739b", "37707ac24978f9c3", 5.4433883633464575e-05, 4398.520002853998),
    ),
    "ssd300_densenet121": (
        _create("ssd300_densenet121"),
        (1, 3, 300, 300),
        (13466460, "c491643e5b6af299", "fd5a59af735eba96", -48046.601877564666, 274786.65613494),
    ),
    "ssd_tiny_groupnorm": (
        _create(
            "SSD",
            encoder=TINY_SSD_ENCODER,
            num_classes=3,
            image_size=64,
            extra_channels=(8,),
            norm_layer=dict(type="GroupNorm", num_groups=2),
        ),
        (2, 3, 64, 64),
        (218756, "f1661792261a94dd", "eed53cfb8decf1b8", -4.670399357564747e-05, 4151.273711954098),
    ),
    "base_densenet121_tiramisu": (
        _config_network("_base_/models/densenet121_tiramisu.py", "network"),
        (1, 3, 64, 64),
        (14767195, "212758775b5cbbf0", "49b7c19c39a40b6b", 775.5810847148532, 10083.666093450389),
    ),
    "base_fcdensenet56": (
        _config_network("_base_/models/fcdensenet56.py", "network"),
        (1, 3, 32, 32),
        (1376795, "6c6b1ea25e27c989", "131834cd84ac230d", 121.8041797861224, 1667.005740034976),
    ),
    "base_fcdensenet67": (
        _config_network("_base_/models/fcdensenet67.py", "network"),
        (1, 3, 32, 32),
        (3463243, "fa7ed65b7b740d18", "8ad819d759d5bd91", 185.34570133313537, 1433.008516430622),
    ),
    "base_fcdensenet103": (
        _config_network("_base_/models/fcdensenet103.py", "network"),
        (1, 3, 32, 32),
        (9322091, "1b6af4a50cdbfe0a", "1f148c654997350f", 84.41582832590211, 1333.318645267631),
    ),
    "quickstart_shapes_segmentation": (
        _config_network("quickstart_shapes_segmentation.py", "model", "model"),
        (2, 3, 64, 64),
        (714892, "f773dd14c5f9ba4e", "a7cace5c33d9ee33", -96.41737206577614, 4140.668108389373),
    ),
    "quickstart_shapes_classification": (
        _config_network("quickstart_shapes_classification.py", "model", "model"),
        (2, 3, 64, 64),
        (306635, "e2c64bba1a26723c", "ce4ba92b5443a2cd", 8.850836992263794, 12.388435125350952),
    ),
    "quickstart_shapes_detection": (
        _config_network("quickstart_shapes_detection.py", "model", "model"),
        (2, 3, 64, 64),
        (412288, "2f802e35f515453a", "b08b2a93ec2cb6f9", -1343.4905878691206, 9926.813176723357),
    ),
    "quickstart_nifti_segmentation": (
        _config_network("quickstart_nifti_segmentation.py", "model", "model"),
        (2, 3, 64, 64),
        (350115, "a184e247079d561e", "a070180fcd1d8a3e", -917.2997797953062, 3328.964117644959),
    ),
    "quickstart_geotiff_segmentation": (
        _config_network("quickstart_geotiff_segmentation.py", "model", "model"),
        (2, 4, 64, 64),
        (350360, "a184e247079d561e", "083927c05d37853f", -565.9089383676906, 3668.783277319519),
    ),
}


def _digest(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]


def _state_digest(state_dict) -> str:
    return _digest(
        part
        for key, value in state_dict.items()
        for part in (key.encode(), str(tuple(value.shape)).encode(), str(value.dtype).encode(), value.numpy().tobytes())
    )


@pytest.mark.parametrize("name", list(CASES))
def test_construction_and_outputs_match_the_figures_from_before_the_shared_builder(name):
    build, shape, (parameters, keys, state, out_sum, out_abs) = CASES[name]
    torch.manual_seed(0)
    model = build().eval()
    state_dict = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert _digest(["\n".join(state_dict).encode()]) == keys
    assert _state_digest(state_dict) == state
    with torch.no_grad():
        out = model(torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    flat = torch.cat([o.double().flatten() for o in (out if isinstance(out, (tuple, list)) else [out])])
    assert flat.sum().item() == pytest.approx(out_sum, rel=1e-5, abs=1e-3)
    assert flat.abs().sum().item() == pytest.approx(out_abs, rel=1e-5)
