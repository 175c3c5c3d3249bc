"""What every task's file prediction shares: the task with its checkpoint, the config's normalisation, the backend,
the file loop with its list of failures.

Training sees normalised crops; users have whole images, often larger than memory allows and not multiples of 32. A
predictor normalises exactly as the config's ``Normalize`` step and runs the task's forward on the chosen backend
(``densevision.backends``); each task's own predictor (``densevision.tasks.<task>.predictor``) turns the outputs into
its results and writes them. Large images are predicted in overlapping tiles (``densevision.tiling``), so the result
has no seams. Files that are not one image (a NIfTI volume, a GeoTIFF scene) are read and
written by the file-format plug-ins (``densevision.formats``), loaded only when such a file comes.
"""

from __future__ import annotations

import argparse
import glob
import inspect
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor, nn

from densevision.backends import CHECK_SIZE, onnx_cache_file, prepare_forward
from densevision.data.checks import DatasetError
from densevision.data.detection import as_rgb
from densevision.data.io import list_files, read_image
from densevision.engine.checkpoint import load_model_weights
from densevision.formats import input_suffixes
from densevision.registry import DATASETS, PREDICTORS, TASKS, ConfigError
from densevision.splits import PREDICTION_SPLITS, split_dataset_cfg, split_dataset_key

__all__ = [
    "Predictor",
    "InferenceReport",
    "load_task",
    "predictor_class",
    "metainfo",
    "pipeline_step",
    "as_pair",
    "dataset_prediction_options",
    "find_images",
    "infer_files",
    "output_folder",
]


logger = logging.getLogger("densevision")


def _where(node: Any) -> str:
    """The config file a config node came from, for error messages."""
    return getattr(node, "filename", None) or "the config"


def _torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device this machine has: a misspelt name or CUDA without a GPU is a ConfigError."""
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but CUDA is not available; use 'cpu'")
    return chosen


def load_task(
    cfg: Mapping[str, Any], checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> nn.Module:
    """The task model of ``cfg.model`` with the checkpoint's weights, in eval mode on ``device``."""
    return _load_task(cfg, checkpoint, device)[0]


def _register_tasks() -> None:
    """Register the tasks and their predictors (importing them here: each task's predictor module imports this one)."""
    import densevision.tasks  # noqa: F401


def _load_task(
    cfg: Mapping[str, Any], checkpoint: str | os.PathLike, device: str | torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """The task with the checkpoint's weights, and the checkpoint's ``meta`` (epoch, the dataset's metainfo)."""
    if "model" not in cfg:
        raise ConfigError(f"{_where(cfg)} has no 'model' (the task to predict with)")
    _register_tasks()
    device = _torch_device(device)
    task = TASKS.build(cfg["model"])
    meta = load_model_weights(task, checkpoint).get("meta", {})
    return task.to(device).eval(), meta if isinstance(meta, dict) else {}


def _split_datasets(cfg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The datasets of the test, val and train splits that the config states, resolved as the runner resolves them
    (``densevision.splits``), so prediction prepares images as testing did."""
    return [split_dataset_cfg(cfg, split) for split in PREDICTION_SPLITS if split_dataset_key(cfg, split) is not None]


def _dataset_cfg(cfg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    datasets = _split_datasets(cfg)
    return datasets[0] if datasets else None


def _dataset_attribute(cfg: Mapping[str, Any], name: str) -> Sequence | None:
    """``classes``/``palette`` as the config's dataset sets it, else as its registered class defines it: the fallback
    for checkpoints written before they carried the dataset's metainfo."""
    dataset = _dataset_cfg(cfg)
    if dataset is None:
        return None
    if dataset.get(name) is not None:
        return dataset[name]
    kind = dataset.get("type")
    if isinstance(kind, str):
        kind = DATASETS.get(kind) if kind in DATASETS else None
    value = inspect.getattr_static(kind, name, None) if inspect.isclass(kind) else None
    return value if isinstance(value, Sequence) and not isinstance(value, str) else None


def dataset_prediction_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What the config's dataset class says a predictor needs for whole files (``prediction_options``: a volume's
    slicing, a scene's bands), so the predictor prepares them as training did."""
    dataset = _dataset_cfg(cfg)
    kind = dataset.get("type") if dataset is not None else None
    kind = DATASETS.get(kind) if isinstance(kind, str) and kind in DATASETS else kind
    options = getattr(kind, "prediction_options", None)
    return dict(options(dataset)) if callable(options) else {}


def metainfo(cfg: Mapping[str, Any], checkpoint_meta: Mapping[str, Any], name: str) -> Any:
    """A dataset metainfo entry (``classes``, ``palette``, ``image_format``) as the checkpoint stored it (older
    checkpoints: the config's dataset, where its class defines the entry)."""
    stored = checkpoint_meta.get("dataset_meta") or {}
    if stored.get(name) is not None:
        return stored[name]
    return _dataset_attribute(cfg, name)


def pipeline_step(cfg: Mapping[str, Any], names: Sequence[str]) -> Mapping[str, Any] | None:
    """The last step of type ``names`` in the first split's pipeline (test, then val, then train) that has one."""
    for dataset in _split_datasets(cfg):
        pipeline = dataset.get("pipeline")
        if not isinstance(pipeline, Sequence):
            continue
        steps = [
            step
            for step in pipeline
            if isinstance(step, Mapping) and getattr(step.get("type"), "__name__", step.get("type")) in names
        ]
        if steps:
            return steps[-1]
    return None


def _normalisation_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """mean, std and max_pixel_value of the pipeline's ``Normalize`` step, albumentations' defaults filling gaps."""
    step = pipeline_step(cfg, ("Normalize",))
    if step is None:
        raise ConfigError(
            f"{_where(cfg)} has no Normalize step in the pipeline of "
            f"{' / '.join(f'{s}_dataloader.dataset' for s in PREDICTION_SPLITS)};"
            " the predictor normalises images as that step does"
        )
    if step.get("normalization", "standard") != "standard":
        raise ConfigError(
            f"Normalize(normalization={step['normalization']!r}) in {_where(step)}"
            " is not supported for prediction; use the standard (mean/std) normalisation"
        )
    defaults = inspect.signature(A.Normalize).parameters
    values = {key: step.get(key, defaults[key].default) for key in ("mean", "std", "max_pixel_value")}
    unset = [key for key, value in values.items() if value is None]
    if unset:
        raise ConfigError(
            f"Normalize in {_where(step)} leaves {', '.join(unset)} unset; prediction needs explicit values"
        )
    return values


def _num_classes(task: nn.Module, classes: Sequence[str] | None, where: str) -> int:
    value = getattr(task, "num_classes", None)
    if isinstance(value, int):
        return value
    if classes is not None:
        return len(classes)
    raise ConfigError(
        f"cannot tell the number of classes of {type(task).__name__} from {where}: "
        "set num_classes on the model or classes on the dataset"
    )


def as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigError(f"{name} must be a positive int or (height, width), got {value!r}")
    return pair


def _depth(dtype: np.dtype) -> str:
    """A dtype as users name it: ``16-bit (uint16, max 65535)``, ``float32``."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return f"{info.bits}-bit ({dtype}, max {info.max})"
    return str(dtype)


class Predictor(ABC):
    """A task model in eval mode on a device, and images prepared as training prepared its images.

    ``mean``/``std`` follow ``albumentations.Normalize``: ``(image - mean * max_pixel_value) / (std *
    max_pixel_value)``, one value per band (or one for all bands). ``classes`` default to the class indices as names.

    ``image_format`` is what the training images were (``metainfo['image_format']``: ``dtype``, ``max_value``,
    ``channels``, ``to_rgb``), so other files give the answer the same picture gives in the training format:
    ``to_tensor`` repeats a grey image to RGB and drops alpha where training did (``to_rgb``), scales an unsigned
    integer image of another bit depth to the training one (a 16-bit image for a model trained on 8-bit ones:
    ``× 255 / 65535``), and refuses (``DatasetError``) another channel count, and a float image for a model trained on
    integers or the reverse (its value range is not known, so no scale is meaningful). Without ``image_format``
    (checkpoints written before it, datasets that do not record it), images go as read, except that an integer image
    deeper than 8 bits is refused when ``Normalize`` scales by ``max_pixel_value=255`` (the model saw 8-bit images).

    Each task's predictor owns its results: ``predict(image)`` returns them, ``write`` saves one image's files and
    ``finish`` the files that cover every image (a CSV, a results JSON); ``add_arguments``/``options_from_args`` are
    its command-line options in tools/infer.py. The tool and ``infer_files`` know no task.

    ``forward`` is the task's forward through the chosen backend (``backend``, ``precision``, ``compile``,
    ``channels_last``, ``onnx_file``: ``densevision.backends.prepare_forward``); predictions, tiles included, go
    through it, and the log says once what it runs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        num_classes: int,
        classes: Sequence[str] | None = None,
        max_pixel_value: float = 255.0,
        image_format: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        backend: str = "torch",
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool | None = None,
        onnx_file: str | os.PathLike | None = None,
    ) -> None:
        self.num_classes = int(num_classes)
        self.classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(self.num_classes))
        self.device = _torch_device(device)
        self.model = model.to(self.device).eval()
        mean_values = np.atleast_1d(np.asarray(mean, dtype=np.float64)) * max_pixel_value
        std_values = np.atleast_1d(np.asarray(std, dtype=np.float64)) * max_pixel_value
        if mean_values.ndim != 1 or std_values.ndim != 1 or len(mean_values) != len(std_values):
            raise ConfigError(f"mean and std need one value per band (the same number), got mean={mean}, std={std}")
        if np.any(std_values == 0):
            raise ConfigError(f"std must not be zero, got std={std}")
        self.mean = torch.as_tensor(mean_values, dtype=torch.float32, device=self.device)[:, None, None]
        self.std = torch.as_tensor(std_values, dtype=torch.float32, device=self.device)[:, None, None]
        self.max_pixel_value = float(max_pixel_value)
        if image_format is not None and not (
            isinstance(image_format, Mapping) and {"dtype", "max_value", "channels", "to_rgb"} <= set(image_format)
        ):
            raise ConfigError(f"image_format needs dtype, max_value, channels and to_rgb, got {image_format!r}")
        self.image_format = dict(image_format) if image_format is not None else None
        self.forward, self.backend = prepare_forward(
            self.model,
            device=self.device,
            backend=backend,
            precision=precision,
            compile=compile,
            channels_last=channels_last,
            onnx_file=onnx_file,
            check_size=self.onnx_check_size(),
        )
        logger.info("inference: %s", self.backend)

    def onnx_check_size(self) -> tuple[int, int]:
        """The (odd) input size an ONNX export is checked at before onnxruntime stands in for the task."""
        return CHECK_SIZE

    def to_tensor(self, image: np.ndarray) -> Tensor:
        """An H×W (one band) or H×W×C image as a normalised C×H×W float32 tensor on the predictor's device, its bands
        and bit depth made those of the training images (``image_format``)."""
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or min(array.shape) == 0:
            raise DatasetError(f"expected an H×W or H×W×C image, got an array of shape {array.shape}")
        array = self._bands_as_trained(array)
        trained_max, image_max = self._depth_as_trained(array.dtype)
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)).to(self.device)
        if trained_max != image_max:
            tensor = tensor.mul_(trained_max).div_(image_max)  # exact for 16 to 8 bits: 65535 = 255 × 257
        return (tensor - self.mean) / self.std

    def _bands_as_trained(self, array: np.ndarray) -> np.ndarray:
        """Grey repeated to RGB and alpha dropped where the training data did so (detection), as its dataset does;
        another band count than the model's refused."""
        bands = array.shape[2]
        trained = self.image_format
        if trained is not None and trained["to_rgb"] and bands in (1, 4):
            array = as_rgb(array, Path())
            bands = 3
        expected = trained["channels"] if trained is not None else None
        if expected is not None and bands != expected:
            kind = {1: " (grayscale)", 2: " (grayscale with alpha)"}.get(bands, "")
            raise DatasetError(
                f"image has {bands} band(s){kind} but the model was trained on {expected}-band images (its dataset "
                f"converts no other band count); convert the file to {expected} bands"
            )
        if len(self.mean) not in (1, bands):
            raise DatasetError(
                f"image has {bands} band(s) but the normalisation has {len(self.mean)} mean/std values "
                "(one per band expected)"
            )
        return array

    def _depth_as_trained(self, dtype: np.dtype) -> tuple[float, float]:
        """(training scale, this image's scale): the image's values are multiplied by their ratio, so that an image of
        another unsigned bit depth is seen at the training depth; equal when nothing is to be scaled."""
        trained = self.image_format
        if trained is None:
            if self.max_pixel_value == 255 and np.issubdtype(dtype, np.integer) and np.iinfo(dtype).max > 255:
                raise DatasetError(
                    f"image is {_depth(dtype)} but the model's Normalize scales by max_pixel_value=255 (it saw 8-bit "
                    "images) and its checkpoint does not record the bit depth it was trained on; convert the file "
                    "to 8 bits"
                )
            return 1.0, 1.0
        trained_dtype = np.dtype(trained["dtype"])
        if dtype == trained_dtype:
            return 1.0, 1.0
        if np.issubdtype(dtype, np.unsignedinteger) and np.issubdtype(trained_dtype, np.unsignedinteger):
            return float(trained["max_value"]), float(np.iinfo(dtype).max)
        raise DatasetError(
            f"image is {_depth(dtype)} but the model was trained on {_depth(trained_dtype)} images; no scale "
            f"between them is meaningful, convert the file to {trained_dtype}"
        )

    @abstractmethod
    def predict(self, image: np.ndarray) -> dict[str, Any]:
        """The task's results for one H×W×C image (numpy arrays and plain values)."""

    @abstractmethod
    def write(self, path: Path, image: np.ndarray, prediction: Mapping[str, Any], out_dir: Path) -> list[Path]:
        """Save the results of one image (read from ``path``) under ``out_dir``; returns the files written."""

    @abstractmethod
    def finish(self, out_dir: Path) -> list[Path]:
        """Close what covers every image (a CSV written as results came, a results JSON); returns those files."""

    def predict_file(self, path: Path, out_dir: Path) -> list[Path] | None:
        """Predict a file that is not read as one image (a volume, a scene larger than memory) and write its results;
        ``None`` when ``path`` is an ordinary image, which ``infer_files`` reads and passes to ``predict``."""
        return None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """This predictor's options for tools/infer.py (optional: none by default)."""
        return None

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Constructor options from the parsed ``add_arguments`` options."""
        return {}

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu", **options
    ) -> Predictor:
        """The predictor the task of ``cfg.model`` names, with the checkpoint's weights.

        Normalisation comes from the test (else val, else train) pipeline's ``Normalize`` step; class names and
        palette from the dataset metainfo stored in the checkpoint. ``options`` override the predictor's other
        arguments (``tile_size=512``, ``top_k=3``...) and choose the backend (``backend='auto'``, ``precision``,
        ``compile``, ``channels_last``); an ONNX export is cached beside the checkpoint (``backends.onnx_cache_file``).
        """
        predictor_cls = predictor_class(cfg)
        if cls is not Predictor:
            if not issubclass(cls, predictor_cls):
                raise ConfigError(
                    f"model.type={cfg['model']['type']!r} in {_where(cfg)} needs a {predictor_cls.__name__}, "
                    f"not a {cls.__name__}"
                )
            predictor_cls = cls
        task, meta = _load_task(cfg, checkpoint, device)
        arguments = predictor_cls._config_arguments(cfg, task, meta)
        if options.get("backend", "torch") != "torch" and options.get("onnx_file") is None:
            options["onnx_file"] = onnx_cache_file(checkpoint, cfg["model"])  # reused while the checkpoint is unchanged
        # An option left unset (None) keeps what the config gives (a raster dataset's window as the tile size).
        arguments.update({key: value for key, value in options.items() if value is not None or key not in arguments})
        return predictor_cls(task, device=device, **arguments)

    @classmethod
    def _config_arguments(cls, cfg: Mapping[str, Any], task: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
        classes = metainfo(cfg, meta, "classes")
        return {
            **_normalisation_from_config(cfg),
            "num_classes": _num_classes(task, classes, _where(cfg)),
            "classes": classes,
            "image_format": metainfo(cfg, meta, "image_format"),
        }


def predictor_class(cfg: Mapping[str, Any]) -> type[Predictor]:
    """The predictor that the task ``cfg.model`` builds names (its ``predictor`` attribute), without building it."""
    _register_tasks()
    where = _where(cfg)
    if not isinstance(cfg.get("model"), Mapping) or "type" not in cfg["model"]:
        raise ConfigError(f"{where} has no model=dict(type=...) (the task to predict with)")
    kind = cfg["model"]["type"]
    task_cls = TASKS.get(kind) if isinstance(kind, str) and kind in TASKS else kind
    name = getattr(task_cls, "predictor", None)
    if not isinstance(name, str):
        raise ConfigError(
            f"no predictor for model.type={kind!r} in {where}: a task names its predictor class in `predictor` "
            f"(registered predictors: {', '.join(PREDICTORS.names())})"
        )
    return PREDICTORS.get(name)


def find_images(pattern: str | os.PathLike) -> list[Path]:
    """A file, the image files of a folder, or the image files matching a glob (``**`` recursive), sorted; hidden
    files (macOS ``._*`` resource forks) are left out of folders and globs."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = list_files(path, input_suffixes())[0]
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(input_suffixes())}) in folder {path}")
        return found
    found = [Path(p) for p in glob.glob(str(pattern), recursive=True)]  # glob already skips names starting with "."
    found = [p for p in found if p.is_file() and p.name.lower().endswith(input_suffixes())]
    if not found:
        raise FileNotFoundError(f"no image file matched {str(pattern)!r} (a file, a folder or a glob pattern)")
    return sorted(found)


@dataclass
class InferenceReport:
    """What ``infer_files`` did: the files written, and the inputs that could not be read, with the reason."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` created if needed; a file in the way or a folder that cannot be written is one OSError naming it,
    raised before any image is predicted."""
    out = Path(path)
    in_the_way = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise FileExistsError(f"cannot use {out} as the output folder: {in_the_way} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(f"cannot create the output folder {out}: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {out} is not writable")
    return out


def infer_files(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[Iterable[Path]], Iterable[Path]] = iter,
) -> InferenceReport:
    """Predict every readable image in ``paths`` and let the predictor write its results under ``out_dir``.

    An image that cannot be read or predicted (a ``DatasetError``: a corrupt file, a band count or bit depth that the
    model's training images did not have) is skipped and listed in the report with the reason (a batch of thousands
    is not lost to one bad file); the predictor's ``finish`` runs however the loop ends. ``progress`` wraps the path
    iterator (``tqdm``), so the caller decides what is shown.
    """
    paths = [Path(p) for p in paths]
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems and stems[path.stem] != path:
            raise DatasetError(
                f"{stems[path.stem]} and {path} share the name {path.stem!r}; their outputs would collide"
            )
        stems[path.stem] = path
    out = output_folder(out_dir)
    report = InferenceReport()
    try:
        for path in progress(paths):
            try:
                files = predictor.predict_file(path, out)
                if files is None:
                    image = read_image(path)
                    prediction = predictor.predict(image)
            except DatasetError as err:
                report.failed.append((path, str(err)))
                continue
            if files is None:
                files = predictor.write(path, image, prediction, out)
            report.written += files
    finally:
        report.written += predictor.finish(out)
    return report
