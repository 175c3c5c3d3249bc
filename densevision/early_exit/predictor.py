"""EarlyExitPredictor: file classification with a multi-exit network, from one exit or adaptively.

Without thresholds every image is answered by the task's chosen exit (``predict_exit``, by default the last), on any
backend: the backends compute every exit's logits (``EarlyExitClassifier.export_forward``, the ONNX graph's
``exit0`` … outputs) and the chosen one answers. With thresholds (``--budget`` or ``--exit-threshold``) prediction is
adaptive: the network runs one exit at a time in eager PyTorch (``model.iter_exits``) and each image stops at the
first exit whose confidence (its top softmax score) reaches that exit's threshold, the last exit answering whatever
reaches it, so the deeper blocks of an easy image never run. That loop branches per image on a computed value, which
neither one ONNX graph nor ``torch.compile`` of the whole network expresses, hence torch, eager, only.

The thresholds come from the calibration file ``tools/test.py`` writes (``exit_thresholds.json``: per budget of the
sweep, its mean FLOPs per image on val and one threshold per exit, ``null`` where no image leaves); ``budget`` picks
the budget with the largest val mean FLOPs that is at most ``budget``. A file with one ``thresholds`` list (written by
hand) is used as it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densevision.early_exit.report import REPORT_FILES
from densevision.precision import autocast_dtype
from densevision.registry import PREDICTORS, ConfigError
from densevision.tasks.classification.predictor import ClassificationPredictor

__all__ = ["EarlyExitPredictor", "load_exit_thresholds"]


def load_exit_thresholds(path: str | os.PathLike, *, num_exits: int, budget: float | None = None) -> list[float]:
    """Per-exit thresholds (``inf``: no image leaves there; the last is ``-inf``, it takes every image left) from a
    calibration file: with ``budget``, those of the largest budget whose val ``mean_flops`` is at most ``budget``;
    a file with one ``thresholds`` list needs no budget. Every problem is a ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"calibration file {path} not found: tools/test.py writes it ({REPORT_FILES['thresholds']}) beside the "
            "test metrics of an early-exit model; name it with --exit-threshold"
        ) from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the calibration file {path}: {err}") from None
    if not isinstance(data, dict) or not ({"budgets", "thresholds"} & set(data)):
        raise ConfigError(f"{path} has neither 'budgets' (tools/test.py's calibration) nor 'thresholds'")
    if "budgets" in data:
        thresholds = _budget_thresholds(path, data["budgets"], budget)
    elif budget is not None:
        raise ConfigError(f"{path} holds one list of thresholds, no budgets to choose from; leave --budget out")
    else:
        thresholds = data["thresholds"]
    if not isinstance(thresholds, list) or len(thresholds) != num_exits:
        raise ConfigError(f"{path} gives thresholds {thresholds!r}; the model has {num_exits} exits (one each)")
    if not all(t is None or isinstance(t, (int, float)) for t in thresholds):
        raise ConfigError(f"{path}: thresholds must be numbers or null, got {thresholds!r}")
    return [math.inf if t is None else float(t) for t in thresholds[:-1]] + [-math.inf]


def _budget_thresholds(path: Path, budgets: Any, budget: float | None) -> Any:
    if (
        not isinstance(budgets, list)
        or not budgets
        or not all(isinstance(b, dict) and isinstance(b.get("mean_flops"), (int, float)) for b in budgets)
    ):
        raise ConfigError(f"{path}: 'budgets' must be a non-empty list of {{mean_flops, thresholds}}")
    cheapest, dearest = min(b["mean_flops"] for b in budgets), max(b["mean_flops"] for b in budgets)
    if budget is None:
        raise ConfigError(
            f"{path} holds {len(budgets)} budgets (val mean FLOPs {cheapest:.4g} to {dearest:.4g}); choose one with "
            "--budget FLOPS"
        )
    fitting = [b for b in budgets if b["mean_flops"] <= budget]
    if not fitting:
        raise ConfigError(
            f"--budget {budget:g} is below every budget in {path}: the cheapest costs {cheapest:.4g} FLOPs per image"
        )
    return max(fitting, key=lambda b: b["mean_flops"]).get("thresholds")


@PREDICTORS.register_module()
class EarlyExitPredictor(ClassificationPredictor):
    """``ClassificationPredictor`` for ``EarlyExitClassifier``: each prediction also says which exit answered
    (``exit``) and the multiply-adds spent on the image up to it (``flops``, ``densevision.flops``' count at the
    input's size), both in ``predictions.csv``.

    ``exit_thresholds`` (one per exit; ``inf``: never leave there) makes prediction adaptive (see the module);
    ``exit_threshold_file`` and ``budget`` load them (``load_exit_thresholds``). Adaptive prediction runs eager
    PyTorch: ``backend='auto'`` means torch, ``'onnxruntime'`` and ``compile`` are refused.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        exit_thresholds: Sequence[float] | None = None,
        exit_threshold_file: str | os.PathLike | None = None,
        budget: float | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        compile: bool = False,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> None:
        num_exits = model.num_exits
        if exit_thresholds is not None and exit_threshold_file is not None:
            raise ConfigError("give exit_thresholds or exit_threshold_file, not both")
        if exit_threshold_file is not None:
            exit_thresholds = load_exit_thresholds(exit_threshold_file, num_exits=num_exits, budget=budget)
        elif budget is not None:
            raise ConfigError("--budget chooses among the budgets of a calibration file; name it with --exit-threshold")
        if exit_thresholds is not None:
            if len(exit_thresholds) != num_exits:
                raise ConfigError(f"exit_thresholds needs {num_exits} values (one per exit), got {exit_thresholds!r}")
            if backend == "onnxruntime" or compile:
                asked = "--backend onnxruntime" if backend == "onnxruntime" else "--compile"
                raise ConfigError(f"adaptive prediction (--budget/--exit-threshold) runs eager torch; drop {asked}")
            backend = "torch"
        self.exit_thresholds = None if exit_thresholds is None else torch.tensor(exit_thresholds, dtype=torch.float64)
        super().__init__(model, backend=backend, precision=precision, compile=compile, device=device, **options)
        adaptive = self.exit_thresholds is not None  # else the backend's forward carries the precision
        self._autocast = autocast_dtype(precision, self.device, what="precision") if adaptive else None
        self._exit_flops: dict[tuple[int, ...], list[int]] = {}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], checkpoint: str | os.PathLike, **options: Any) -> EarlyExitPredictor:
        """As ``Predictor.from_config``; a ``budget`` without ``exit_threshold_file`` reads the calibration file that
        tools/test.py wrote into the work dir: the ``exit_thresholds.json`` beside the checkpoint, else the one in the
        config's ``work_dir``."""
        if options.get("budget") is not None and options.get("exit_threshold_file") is None:
            folders = [Path(checkpoint).parent] + ([Path(cfg["work_dir"])] if cfg.get("work_dir") else [])
            candidates = [folder / REPORT_FILES["thresholds"] for folder in folders]
            options["exit_threshold_file"] = next((c for c in candidates if c.is_file()), candidates[0])
        return super().from_config(cfg, checkpoint, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--budget",
            type=float,
            metavar="FLOPS",
            help="adaptive prediction (eager torch only): the calibrated thresholds of the largest budget whose val "
            "mean multiply-adds per image are at most FLOPS (from --exit-threshold, default the "
            f"{REPORT_FILES['thresholds']} beside the checkpoint, else in the config's work_dir)",
        )
        parser.add_argument(
            "--exit-threshold",
            metavar="FILE",
            help=f"adaptive prediction (eager torch only) with the thresholds of FILE (tools/test.py's "
            f"{REPORT_FILES['thresholds']} with --budget, or a JSON with one 'thresholds' list); without it and "
            "--budget every image is answered by the task's predict_exit (the last)",
        )

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {**super().options_from_args(args), "budget": args.budget, "exit_threshold_file": args.exit_threshold}

    def exit_flops(self, tensor: Tensor) -> list[int]:
        """Multiply-adds per image up to each exit for inputs of ``tensor``'s size (counted once per size)."""
        shape = tuple(tensor.shape[1:])
        if shape not in self._exit_flops:
            self._exit_flops[shape] = self.model.exit_flops(shape)
        return self._exit_flops[shape]

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> dict[str, Any]:
        """``ClassificationPredictor.predict``'s results plus ``exit`` (int) and ``flops`` (int)."""
        tensor = self.input_tensor(image)
        if self.exit_thresholds is None:
            exit_index = self.model.predict_exit
            logits = self.forward(tensor)[exit_index]
        else:
            exit_index, logits = self._first_confident_exit(tensor)
        return {**self.classify(logits), "exit": exit_index, "flops": self.exit_flops(tensor)[exit_index]}

    def _first_confident_exit(self, tensor: Tensor) -> tuple[int, Tensor]:
        """The first exit whose top softmax score reaches its threshold (else the last), and its logits; no deeper
        block runs. Compared in float64, as ``budget.assign_exits`` compares during calibration."""
        with torch.autocast(self.device.type, dtype=self._autocast, enabled=self._autocast is not None):
            for exit_index, logits in enumerate(self.model.model.iter_exits(tensor)):
                if logits.float().softmax(1).max().double() >= self.exit_thresholds[exit_index]:
                    break
        return exit_index, logits.float()

    def csv_columns(self) -> list[str]:
        return [*super().csv_columns(), "exit", "flops"]

    def csv_values(self, path: Path, prediction: Mapping[str, Any]) -> list[Any]:
        return [*super().csv_values(path, prediction), prediction["exit"], prediction["flops"]]
