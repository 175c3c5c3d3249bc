"""Every densevision model through torch.compile and torch.export, at tiny widths so the module stays fast.

``fullgraph=True`` everywhere: each model is one graph (no graph break), for inference (with and without autograd, which
take different dense-block paths) and for memory-efficient training. Dynamo's capture is checked with the ``eager``
backend (what smp's own encoder tests use); one model also goes through Inductor's C++ code generation.
"""

from collections.abc import Callable

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

import densevision
from densevision.models.dsod import DSOD
from densevision.models.fcdensenet import FCDenseNet
from densevision.models.interop import SmpDenseNetEncoder, register_smp_encoders

TINY_DENSENET = dict(growth_rate=4, block_config=(2, 1, 1, 2), stem_channels=8)


def _smp_unet() -> nn.Module:
    register_smp_encoders(prefix="densevision_tiny_", **TINY_DENSENET)
    return smp.Unet("densevision_tiny_densenet121", encoder_weights=None, decoder_channels=(16, 8, 8, 8, 8), classes=2)


# name -> (builder, input shape)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "densenet121-classifier": (
        lambda: densevision.create_model("densenet121", num_classes=5, **TINY_DENSENET),
        (2, 3, 64, 64),
    ),
    "densenet121-encoder": (
        lambda: densevision.create_model("densenet121", out_indices=(0, 1, 2, 3, 4), **TINY_DENSENET),
        (2, 3, 64, 64),
    ),
    "fcdensenet": (
        lambda: FCDenseNet(
            down_layers=(1, 2, 1),
            bottleneck_layers=2,
            up_layers=(1, 2, 1),
            growth_rate=4,
            stem_channels=6,
            num_classes=3,
        ),
        (2, 3, 32, 32),
    ),
    "dsod": (
        lambda: DSOD(
            num_classes=4,
            image_size=64,
            stem_channels=(8, 8, 16),
            growth_rate=4,
            block_config=(2, 1, 1, 2),
            extra_channels=(8, 8),
        ),
        (2, 3, 64, 64),
    ),
    "smp-unet": (_smp_unet, (2, 3, 64, 64)),
}


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    return build().eval(), torch.randn(shape)


def _flat(outputs: object) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _assert_same(actual: object, expected: object) -> None:
    actual, expected = _flat(actual), _flat(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no_grad"])
@pytest.mark.parametrize("name", list(MODELS))
def test_compile_captures_one_graph(name, grad):
    """fullgraph=True: the dense blocks' concatenating (autograd) and preallocated-buffer (no_grad) paths both trace."""
    model, x = _build(name)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.set_grad_enabled(grad):
        _assert_same(compiled(x), model(x))


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_export_matches_eager(name):
    model, x = _build(name)
    exported = torch.export.export(model, (x,), strict=True)
    with torch.no_grad():
        _assert_same(exported.module()(x), model(x))


def test_memory_efficient_model_exports_as_plain_graph():
    model = densevision.create_model("densenet121", num_classes=5, memory_efficient=True, **TINY_DENSENET).eval()
    x = torch.randn(2, 3, 64, 64)
    exported = torch.export.export(model, (x,), strict=True)
    with torch.no_grad():
        _assert_same(exported.module()(x), model(x))


def test_inductor_compiles_inference():
    """Inductor's C++ code generation (gcc), fullgraph, on the tiny classifier: the compiled logits equal eager's."""
    model, x = _build("densenet121-classifier")
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        _assert_same(compiled(x), model(x))


def test_compiled_memory_efficient_training_matches_eager():
    """Compiled, memory-efficient layers checkpoint their first stage; AOTAutograd recomputes it in backward and counts
    the batch into BatchNorm's running statistics once, as the eager shared-storage function does."""
    torch.manual_seed(0)
    eager = densevision.create_model("densenet121", num_classes=5, memory_efficient=True, **TINY_DENSENET).train()
    compiled_model = densevision.create_model("densenet121", num_classes=5, memory_efficient=True, **TINY_DENSENET)
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model.train(), fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 64, 64)
    for model in (eager, compiled):
        model(x).square().mean().backward()

    norm = "features.denseblock1.denselayer2.norm1"
    assert compiled_model.get_submodule(norm).num_batches_tracked.item() == 1
    for (name, buf_compiled), buf_eager in zip(compiled_model.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(buf_compiled, buf_eager, rtol=1e-5, atol=1e-6, msg=name)
    for (name, p_compiled), p_eager in zip(compiled_model.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_smp_encoder_contract_flags_are_truthful():
    """What smp's BaseEncoderTester does with EncoderMixin's flags: compile (fullgraph, dynamic, eager backend) and
    strict torch.export must work when flagged so; TorchScript, flagged off, must raise a RuntimeError."""
    encoder = SmpDenseNetEncoder(**TINY_DENSENET).eval()
    x = torch.randn(1, 3, 64, 64)
    assert encoder._is_torch_compilable and encoder._is_torch_exportable and not encoder._is_torch_scriptable
    with torch.inference_mode():
        eager = encoder(x)
    _assert_same(torch.compile(encoder, fullgraph=True, dynamic=True, backend="eager")(x), eager)
    with torch.inference_mode():
        _assert_same(torch.export.export(encoder, (x,), strict=True).module()(x), eager)
    with pytest.raises(RuntimeError, match="not TorchScript-scriptable"):
        torch.jit.script(encoder)
