import functools

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from densevision.models import memory_efficient as efficient_internals
from densevision.models.blocks import DenseBlock, DenseLayer, Transition, make_act
from densevision.profiling import dispatched_operators, saved_tensor_bytes

# The memory-efficient kernels differ by device (CUDA's batch norm writes its saved statistics even in eval mode).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(params=["measured", "fused"])
def batch_norm_kernels(request, monkeypatch):
    """Memory-efficient BatchNorm from statistics measured once per block (CPU) or by BatchNorm's fused training kernel
    (GPUs): both paths on every device."""
    monkeypatch.setattr(efficient_internals, "_fuses_batch_norm", lambda x: request.param == "fused")
    return request.param


def _block(*, memory_efficient: bool, num_layers: int = 3, in_channels: int = 6, **kwargs) -> DenseBlock:
    torch.manual_seed(0)
    return DenseBlock(num_layers, in_channels, 4, memory_efficient=memory_efficient, **kwargs).double()


def _saved_tensor_bytes(block: nn.Module, x: torch.Tensor) -> int:
    return saved_tensor_bytes(lambda: block(x))


@pytest.mark.parametrize("bottleneck_width", [4, None])
def test_dense_layer_shapes_and_module_names(bottleneck_width):
    layer = DenseLayer(10, 4, bottleneck_width=bottleneck_width)
    out = layer([torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8)])
    assert out.shape == (2, 4, 8, 8)
    expected = {"norm1", "relu1", "conv1"} | ({"norm2", "relu2", "conv2"} if bottleneck_width else set())
    assert {name for name, _ in layer.named_children()} == expected
    assert layer.conv1.out_channels == (16 if bottleneck_width else 4)


@pytest.mark.parametrize(("return_new_only", "channels"), [(False, 6 + 3 * 4), (True, 3 * 4)])
def test_dense_block_channels(return_new_only, channels):
    block = DenseBlock(3, 6, 4, return_new_only=return_new_only)
    x = torch.randn(2, 6, 8, 8)
    out = block(x)
    assert block.out_channels == channels and out.shape == (2, channels, 8, 8)
    assert list(block) == ["denselayer1", "denselayer2", "denselayer3"]
    if not return_new_only:
        assert torch.equal(out[:, :6], x)


def test_dense_block_rejects_zero_layers():
    with pytest.raises(ValueError, match="num_layers=0"):
        DenseBlock(0, 6, 4)


@pytest.mark.parametrize("return_new_only", [False, True])
@pytest.mark.parametrize("memory_efficient", [False, True])
def test_inference_buffer_equals_concatenation(return_new_only, memory_efficient):
    block = _block(memory_efficient=memory_efficient, return_new_only=return_new_only).eval()
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    concatenated = block(x)  # grad enabled: the concatenating path
    with torch.no_grad():
        buffered = block(x)
    assert buffered.shape == concatenated.shape
    torch.testing.assert_close(buffered, concatenated, rtol=0, atol=1e-12)


@pytest.mark.parametrize("return_new_only", [False, True])
def test_channels_last_inference_concatenates_and_keeps_the_format(return_new_only):
    """Channels-last maps skip the buffer (its channel slices are strided there) and stay channels-last."""
    block = _block(memory_efficient=False, return_new_only=return_new_only).eval()
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        block = block.to(memory_format=torch.channels_last)
        out = block(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def _step(block: DenseBlock, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = block(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)).sum().backward()
    return out.detach(), [p.grad for p in block.parameters()], x.grad


# BatchNorm2d + ReLU run from cached batch statistics with explicit kernels; any other norm or activation is run again
# as a module in backward.
NORM_ACT = {
    "batchnorm-relu": {},
    "batchnorm-no-affine-cumulative": dict(norm_layer=functools.partial(nn.BatchNorm2d, affine=False, momentum=None)),
    "groupnorm-silu": dict(norm_layer=lambda channels: nn.GroupNorm(2, channels), act_layer=nn.SiLU),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm_act", list(NORM_ACT))
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("bottleneck_width", [4, None])
def test_memory_efficient_matches_plain_outputs_and_gradients(
    batch_norm_kernels, train, bottleneck_width, norm_act, device
):
    options = dict(drop_rate=0.3, bottleneck_width=bottleneck_width, **NORM_ACT[norm_act])
    plain = _block(memory_efficient=False, **options).train(train).to(device)
    efficient = _block(memory_efficient=True, **options).train(train).to(device)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64, device=device)

    out_plain, grads_plain, x_grad_plain = _step(plain, x, seed=7)
    out_efficient, grads_efficient, x_grad_efficient = _step(efficient, x, seed=7)

    torch.testing.assert_close(out_efficient, out_plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_grad_efficient, x_grad_plain, rtol=0, atol=1e-12)
    assert len(grads_plain) == len(grads_efficient) == len(list(plain.parameters()))
    for grad_efficient, grad_plain in zip(grads_efficient, grads_plain, strict=True):
        assert grad_plain is not None and grad_plain.abs().sum() > 0
        torch.testing.assert_close(grad_efficient, grad_plain, rtol=0, atol=1e-12)
    if train:  # dropout really ran: some outputs are exactly zero in both, at the same places
        assert (out_plain == 0).sum() > 0
    for (name, buf_efficient), (_, buf_plain) in zip(efficient.named_buffers(), plain.named_buffers(), strict=True):
        torch.testing.assert_close(buf_efficient, buf_plain, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_memory_efficient_under_bfloat16_autocast_is_as_accurate_as_plain(batch_norm_kernels, device):
    """conv1 runs in bfloat16 under autocast and backward must differentiate it in that precision: the memory-efficient
    block's outputs and gradients are as close to float32's as plain autocast's are. (Not equal to plain's: its batch
    norms round differently, and bf16 gradients of small parameters are mostly rounding.)"""
    blocks = [DenseBlock(3, 6, 4, memory_efficient=efficient).train().to(device) for efficient in (False, False, True)]
    for block in blocks[1:]:
        block.load_state_dict(blocks[0].state_dict())
    x = torch.randn(3, 6, 8, 8, device=device)
    out_32, grads_32, x_grad_32 = _step(blocks[0], x, seed=0)
    with torch.autocast(device, dtype=torch.bfloat16):
        out_plain, grads_plain, x_grad_plain = _step(blocks[1], x, seed=0)
        out_eff, grads_eff, x_grad_eff = _step(blocks[2], x, seed=0)
    assert out_eff.dtype == out_plain.dtype
    assert all(grad.dtype == torch.float32 for grad in grads_eff)
    for efficient, plain, full in [(out_eff, out_plain, out_32), (x_grad_eff, x_grad_plain, x_grad_32)] + list(
        zip(grads_eff, grads_plain, grads_32, strict=True)
    ):
        error, plain_error = (efficient.float() - full).norm(), (plain.float() - full).norm()
        assert error <= 3 * plain_error + 1e-3 * full.norm()


def test_memory_efficient_updates_running_stats_exactly_once(batch_norm_kernels):
    plain = _block(memory_efficient=False).train()
    efficient = _block(memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    _step(plain, x, seed=1)
    _step(efficient, x, seed=1)

    norms = [name for name, module in efficient.named_modules() if isinstance(module, nn.BatchNorm2d)]
    assert norms and all(efficient.get_submodule(n).num_batches_tracked.item() == 1 for n in norms)
    for (name, buf_efficient), (_, buf_plain) in zip(efficient.named_buffers(), plain.named_buffers(), strict=True):
        torch.testing.assert_close(buf_efficient, buf_plain, rtol=0, atol=1e-12, msg=name)
    # and the step moved them: running means are no longer their initial zeros
    assert efficient.denselayer2.norm1.running_mean.abs().sum() > 0


def test_training_memory_is_quadratic_in_depth_plain_and_linear_memory_efficient():
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64, requires_grad=True)

    def saved(memory_efficient: bool) -> list[int]:
        blocks = [_block(memory_efficient=memory_efficient, num_layers=d, in_channels=4).train() for d in (4, 8, 16)]
        return [_saved_tensor_bytes(block, x) for block in blocks]

    plain, efficient = saved(False), saved(True)
    # memory-efficient keeps the block's buffer (input + L layers' maps) and a fixed amount per layer: m(L) = a + bL,
    # so each doubling of the depth adds exactly twice what the previous one added
    assert efficient[1] - efficient[0] > 0 and efficient[2] - efficient[1] == 2 * (efficient[1] - efficient[0])
    # plain keeps every layer's growing concatenation: m(L) = aL + bL^2, so the part beyond linear,
    # m(2L) - 2m(L) = 2bL^2, quadruples from L to 2L
    beyond_linear = [plain[1] - 2 * plain[0], plain[2] - 2 * plain[1]]
    assert beyond_linear[0] > 0.2 * plain[1] and beyond_linear[1] == 4 * beyond_linear[0]
    assert efficient[2] < plain[2] / 2


def _training_step_operators(model: nn.Module, x: torch.Tensor) -> int:
    """Operators (about one GPU launch each) of a training step on the meta device, which takes the CUDA code path
    (BatchNorm's fused kernel) without running kernels; a first step first, so .grad accumulation counts as in training.
    """
    model, x = model.to("meta").train(), x.to("meta")
    model(x).sum().backward()
    return sum(dispatched_operators(lambda: model(x).sum().backward()).values())


def test_memory_efficient_training_launches_grow_linearly_with_depth_and_stay_below_plain():
    """Launch-bound GPUs wait on the operators a step dispatches: plain mode sums each map's gradient from every later
    layer (quadratic in depth), memory-efficient mode adds each layer's input gradient into one buffer (linear)."""
    x = torch.randn(2, 4, 16, 16)
    depths = (4, 8, 16)
    plain, efficient = (
        [_training_step_operators(_block(memory_efficient=m, num_layers=d, in_channels=4).float(), x) for d in depths]
        for m in (False, True)
    )
    assert efficient[2] - efficient[1] == 2 * (efficient[1] - efficient[0])  # a + bL
    assert plain[2] - plain[1] > 2 * (plain[1] - plain[0]) > 0  # each doubling adds more than twice the last one's
    assert efficient[2] < plain[2], (efficient, plain)  # recomputation's launches are paid back by 16 layers


class _WeightCasts(TorchDispatchMode):
    """How many times each of ``weights`` is cast (``_to_copy``) while the mode is on, by its position."""

    def __init__(self, weights: list[torch.Tensor]) -> None:
        super().__init__()
        self.pointers = [w.data_ptr() for w in weights]
        self.casts = [0] * len(weights)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.pointers:
            self.casts[self.pointers.index(args[0].data_ptr())] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_bf16_training_casts_each_bottleneck_weight_once_per_step(batch_norm_kernels, memory_efficient):
    """Under autocast plain mode keeps autocast's cast of conv1's weight for backward; memory-efficient mode casts it
    once and keeps it too, instead of casting it again in backward (a launch per layer)."""
    block = _block(memory_efficient=memory_efficient, num_layers=3, in_channels=4).float().train()
    x = torch.randn(2, 4, 8, 8)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16):
            out = block(x)
        out.float().sum().backward()

    step()
    counter = _WeightCasts([layer.conv1.weight for layer in block.children()])
    with counter:
        step()
    assert counter.casts == [1, 1, 1]


def test_memory_efficient_densenet121_dispatches_fewer_operators_than_torchvisions_plain_step():
    torchvision = pytest.importorskip("torchvision")
    from densevision.models.densenet import densenet121

    x = torch.randn(2, 3, 64, 64)
    reference = _training_step_operators(torchvision.models.densenet121(), x)
    assert _training_step_operators(densenet121(memory_efficient=True), x) < reference


def test_memory_efficient_output_is_the_buffer_the_layers_keep():
    """A consumer that saves the block's output (the next BatchNorm) adds no copy of it: plain mode's final torch.cat
    and the layers' inputs would be two."""
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    block = _block(memory_efficient=True, num_layers=4, in_channels=4).train()
    norm = nn.BatchNorm2d(block.out_channels).double()
    alone = saved_tensor_bytes(lambda: block(x))
    with_consumer = saved_tensor_bytes(lambda: norm(block(x)))
    out_bytes = block(x).numel() * x.element_size()
    assert with_consumer - alone < out_bytes / 10  # the norm's statistics and parameters, not its input


def test_memory_efficient_layer_alone_matches_plain(batch_norm_kernels):
    """A dense layer called on its own (no block to share storage with) concatenates its inputs once itself."""
    torch.manual_seed(0)
    plain = DenseLayer(10, 4).double().train()
    efficient = DenseLayer(10, 4, memory_efficient=True).double().train()
    efficient.load_state_dict(plain.state_dict())
    inputs = [torch.randn(2, 6, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)]
    results = []
    for layer in (plain, efficient):
        features = [t.clone().requires_grad_(True) for t in inputs]
        out = layer(features)
        out.square().sum().backward()
        results.append([out, *(f.grad for f in features), *(p.grad for p in layer.parameters())])
    for got, expected in zip(*reversed(results), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_memory_efficient_output_refuses_in_place_changes():
    """The layers read the block's output buffer in backward: changing it in place must fail, not corrupt gradients."""
    block = _block(memory_efficient=True).train()
    out = block(torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True))
    with pytest.raises(RuntimeError, match="inplace|in-place"):
        out.mul_(2)


def test_memory_efficient_also_recomputes_in_eval_mode(batch_norm_kernels):
    """Fine-tuning with frozen BatchNorm (eval mode, gradients on) must keep the memory saving."""
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64, requires_grad=True)
    plain = _saved_tensor_bytes(_block(memory_efficient=False, num_layers=8, in_channels=4).eval(), x)
    efficient = _saved_tensor_bytes(_block(memory_efficient=True, num_layers=8, in_channels=4).eval(), x)
    assert efficient < 0.6 * plain  # without recomputation both would be equal


def test_memory_efficient_is_plain_without_grad():
    block = _block(memory_efficient=True).train()
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 18, 8, 8) and block.denselayer1.norm1.num_batches_tracked.item() == 1


@pytest.mark.parametrize(
    ("pool", "pool_type", "size"), [("avg", nn.AvgPool2d, 4), ("max", nn.MaxPool2d, 4), (None, None, 8)]
)
def test_transition(pool, pool_type, size):
    transition = Transition(8, 4, pool=pool)
    assert transition(torch.randn(1, 8, 8, 8)).shape == (1, 4, size, size)
    assert transition.out_channels == 4
    assert [name for name, _ in transition.named_children()][:3] == ["norm", "relu", "conv"]
    assert (pool_type is None and not hasattr(transition, "pool")) or isinstance(transition.pool, pool_type)


def test_transition_rejects_unknown_pool():
    with pytest.raises(ValueError, match="'median'"):
        Transition(8, 4, pool="median")


def test_norm_and_activation_layers_are_passed_in():
    block = DenseBlock(2, 8, 4, norm_layer=lambda c: nn.GroupNorm(2, c), act_layer=nn.SiLU)
    layer = block.denselayer2
    assert isinstance(layer.norm1, nn.GroupNorm) and layer.norm1.num_channels == 12
    assert isinstance(layer.relu1, nn.SiLU) and layer.relu1.inplace
    assert block(torch.randn(1, 8, 8, 8)).shape == (1, 16, 8, 8)


def test_make_act_uses_inplace_when_available():
    assert make_act(nn.ReLU).inplace
    assert isinstance(make_act(nn.GELU), nn.GELU)
