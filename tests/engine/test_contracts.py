"""The task and dataset contracts: what is required, what the optional hooks default to, and the runner's refusal of
classes that do not follow them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from densevision.contracts import DenseDataset, Task
from densevision.data.base import SegmentationDataset
from densevision.data.detection import DetectionDataset
from densevision.data.image_folder import CIFAR10Folder, ImageFolderDataset
from densevision.engine.runner import Runner
from densevision.registry import DATASETS, TASKS, ConfigError
from densevision.tasks import Classifier, Detector, Segmentor
from tests.engine.toys import toy_config
from tests.models.test_detector import TINY_DSOD
from tests.test_early_exit import TINY_MSDNET


class MinimalTask(Task):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Conv2d(2, 3, 1)
        self.model.in_chans = 2
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=7)

    def loss(self, batch):
        return {"loss": self.model(batch["image"]).mean()}

    def predict(self, batch):
        return [{"mask": m.argmax(0)} for m in self.model(batch["image"])]


def test_a_task_must_say_how_it_learns_and_predicts():
    class NoPredict(Task):
        def loss(self, batch):
            return {}

    with pytest.raises(TypeError, match="predict"):
        NoPredict()


def test_the_optional_task_hooks_have_defaults():
    task = MinimalTask()
    task.on_train_start(object())  # nothing to prepare
    assert task.describe() is None and task.predictor is None and task.num_classes is None
    assert task.export_outputs == ("logits",) and task.export_input_size is None
    assert task.input_channels() == 2
    assert task.void_labels() == [("model.loss", 7)]


def test_a_dataset_must_state_its_metainfo_and_gets_check_and_describe():
    class NoMeta(DenseDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return {}

    with pytest.raises(TypeError, match="metainfo"):
        NoMeta()

    class Listed(NoMeta):
        metainfo = {"classes": ("a",)}

    assert Listed().check(channels=3) is None and Listed().describe() == "3 samples"


@pytest.mark.parametrize("task", [Segmentor, Classifier, Detector])
def test_the_projects_tasks_follow_the_contract(task):
    assert issubclass(task, Task)


@pytest.mark.parametrize("dataset", [SegmentationDataset, DetectionDataset, ImageFolderDataset, CIFAR10Folder])
def test_the_projects_dataset_bases_follow_the_contract(dataset):
    assert issubclass(dataset, DenseDataset)


@TASKS.register_module(name="EngineContractsPlainModule", force=True)
class PlainModule(nn.Module):
    def loss(self, batch):
        return {"loss": torch.zeros(())}


@DATASETS.register_module(name="EngineContractsPlainDataset", force=True)
class PlainDataset(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return {}


def test_the_runner_refuses_a_task_or_dataset_outside_the_contract_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^model builds PlainModule, which is not a densevision.contracts.Task"):
        Runner(toy_config(tmp_path, model=dict(type="EngineContractsPlainModule")))
    loader = dict(batch_size=2, dataset=dict(type="EngineContractsPlainDataset"))
    with pytest.raises(ConfigError, match=r"^train_dataloader.dataset builds PlainDataset, which is not a densevision"):
        Runner(toy_config(tmp_path, train_dataloader=loader)).train()


TINY_DENSENET = dict(type="DenseNet", growth_rate=4, block_config=(1,), stem_channels=8, num_classes=3)


@pytest.mark.parametrize(
    "task",
    [
        lambda: Segmentor(
            model=dict(
                type="FCDenseNet", down_layers=(1,), bottleneck_layers=1, growth_rate=4, stem_channels=8, num_classes=3
            )
        ),  # fmt: skip
        lambda: Classifier(model=TINY_DENSENET),
        lambda: TASKS.build(dict(type="EarlyExitClassifier", model=TINY_MSDNET)),
        lambda: Detector(model=TINY_DSOD),
    ],
    ids=["Segmentor", "Classifier", "EarlyExitClassifier", "Detector"],
)
def test_each_task_makes_an_example_batch_its_loss_trains_on(task):
    """tools/benchmark.py times a task's loss on ``example_batch``, so it asks no task for its kind."""
    task = task()
    generator = torch.Generator().manual_seed(0)
    batch = task.example_batch(torch.randn(2, 3, 64, 64), generator)
    loss = task.loss(batch)["loss"]
    assert loss.isfinite() and loss > 0
    again = task.example_batch(batch["image"], torch.Generator().manual_seed(0))
    assert str(again) == str(batch)  # drawn from the generator alone


def test_a_task_without_example_batch_says_so():
    with pytest.raises(NotImplementedError, match="MinimalTask has no example_batch"):
        MinimalTask().example_batch(torch.zeros(1, 2, 4, 4), torch.Generator())
