"""Early exits on a plain DenseNet classifier: MSDNet's exit classifiers after chosen transitions, so a DenseNet is
trained, counted and evaluated like an MSDNet (EarlyExitClassifier, densevision.flops, densevision.early_exit).

``create_model("densenet121", early_exits=(1, 2))`` builds one; without ``early_exits`` the named DenseNets are
unchanged (same modules, state_dict names and seeded initialisation).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice

from torch import Tensor, nn

from densevision.models.blocks import resolve_norm_layer
from densevision.models.densenet import DenseNet
from densevision.models.msdnet import ExitClassifier

__all__ = ["EarlyExitDenseNet"]


class EarlyExitDenseNet(nn.Module):
    """A DenseNet classifier with an ``ExitClassifier`` after each transition in ``early_exits`` (1-based: transition
    i follows dense block i), then its own classifier as the last exit.

    ``features`` and ``classifier`` are the DenseNet's own modules under their own names, so its checkpoints (and
    torchvision's) load into them; the exits are ``exits.{k}``. ``forward`` returns every exit's N×num_classes logits,
    shallowest first, and ``num_exits`` stops after that many, running no deeper block; ``classifiers`` lists the exit
    modules in call order (what FLOP counting records totals at).
    """

    def __init__(
        self,
        densenet: DenseNet,
        early_exits: Sequence[int],
        *,
        classifier_channels: int = 128,
        norm_layer: str | type[nn.Module] = "BatchNorm2d",
    ) -> None:
        super().__init__()
        if densenet.out_indices is not None:
            raise ValueError("early exits need a DenseNet classifier, not an encoder built with out_indices")
        transitions = {
            int(name.removeprefix("transition")): module
            for name, module in densenet.features.named_children()
            if name.startswith("transition")
        }
        exits = tuple(int(i) for i in early_exits)
        if not exits or len(set(exits)) != len(exits) or any(i not in transitions for i in exits):
            raise ValueError(
                f"early_exits must be distinct transition indices among {sorted(transitions)} (transition i follows "
                f"dense block i), got {tuple(early_exits)!r}"
            )
        self.early_exits = tuple(sorted(exits))
        self.features = densenet.features
        self.classifier = densenet.classifier
        self.num_classes = densenet.num_classes
        self.default_cfg = densenet.default_cfg
        norm = resolve_norm_layer(norm_layer)
        self.exits = nn.ModuleList(
            ExitClassifier(transitions[i].out_channels, classifier_channels, self.num_classes, norm_layer=norm)
            for i in self.early_exits
        )
        for module in self.exits.modules():  # the exits' own initialisation, as MSDNet's
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @property
    def in_chans(self) -> int:
        return self.features.conv0.in_channels

    @property
    def num_exits(self) -> int:
        return len(self.exits) + 1

    @property
    def classifiers(self) -> list[nn.Module]:
        return [*self.exits, self.classifier]

    def iter_exits(self, x: Tensor) -> Iterator[Tensor]:
        """Each exit's logits in turn; the features after an exit are computed only when the next one is asked for."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{type(self).__name__} expects a 4-D N×{self.in_chans}×H×W tensor, got {tuple(x.shape)}")
        taps = {f"transition{i}": exit_ for i, exit_ in zip(self.early_exits, self.exits)}
        for name, module in self.features.named_children():
            x = module(x)
            if name in taps:
                yield taps[name]([x])
        yield self.classifier(x)

    def forward(self, x: Tensor, *, num_exits: int | None = None) -> list[Tensor]:
        if num_exits is not None and not 1 <= num_exits <= self.num_exits:
            raise ValueError(f"num_exits must be in 1..{self.num_exits}, got {num_exits}")
        return list(islice(self.iter_exits(x), num_exits))


def with_early_exits(densenet: DenseNet, early_exits: Sequence[int] | None) -> DenseNet | EarlyExitDenseNet:
    """``densenet`` itself without ``early_exits``, else an ``EarlyExitDenseNet`` around it; the exits are created
    after the DenseNet, leaving its parameters and random draws as they were."""
    return densenet if early_exits is None else EarlyExitDenseNet(densenet, early_exits)
