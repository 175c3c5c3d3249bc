"""Seeded runs give the losses they gave before the runner was split into setup, resume and loop.

The figures were recorded from the single-class runner (commit c7d78f0) with one CPU thread (reductions over several
threads sum in another order); a change to the order of random draws, of model or optimizer construction, or of the
loop's steps moves them.
"""

from __future__ import annotations

import json

import pytest
import torch

from densevision.data.checks import DatasetError
from densevision.engine.runner import Runner
from tests.engine.toys import toy_config

TINY_TIRAMISU = dict(
    type="EncoderDecoder",
    num_classes=3,
    encoder=dict(type="FCDenseNetEncoder", down_layers=(2, 2), growth_rate=4, stem_channels=8, drop_rate=0.2),
    decoder=dict(type="TiramisuDecoder", bottleneck_layers=2, up_layers=(2, 2), growth_rate=4, drop_rate=0.2),
)

FLIPPED_32PX = dict(type="EngineToySegmentation", num_samples=4, size=32, flip=True)  # flips in validation too

RUNS = {
    # toy network with dropout, flipped samples (torch draws in the main process) and a shuffled loader
    "toy": (
        dict(
            model=dict(type="EngineToySegmentor", drop_rate=0.5),
            train_dataloader=dict(
                batch_size=2,
                num_workers=0,
                shuffle=True,
                dataset=dict(type="EngineToySegmentation", num_samples=8, flip=True),
            ),
        ),
        [
            1.2467063665390015,
            1.0771889686584473,
            1.0484164953231812,
            1.0131030082702637,
            0.9774019122123718,
            0.9682542681694031,
            0.9161364436149597,
            0.9434471726417542,
        ],
    ),
    # the real Segmentor over a tiny FC-DenseNet, AdamW and a cosine schedule
    "tiramisu": (
        dict(
            model=dict(type="Segmentor", model=TINY_TIRAMISU),
            train_dataloader=dict(
                batch_size=2,
                num_workers=0,
                shuffle=True,
                dataset=FLIPPED_32PX,
            ),
            val_dataloader=dict(batch_size=2, num_workers=0, dataset=FLIPPED_32PX),
            optim_wrapper=dict(optimizer=dict(type="AdamW", lr=1e-2, weight_decay=1e-4)),
            param_scheduler=[dict(type="CosineAnnealingLR", T_max=2, by_epoch=True)],
        ),
        [1.1432139873504639, 1.0364075899124146, 0.9906915426254272, 0.9667230844497681],
    ),
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_seeded_run_gives_the_recorded_losses_bit_for_bit(tmp_path, one_thread, name):
    overrides, recorded = RUNS[name]
    Runner(toy_config(tmp_path, **overrides)).train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records if r["mode"] == "train"] == recorded


@pytest.mark.parametrize("check_datasets", [False, True])
def test_a_first_epoch_with_nothing_labelled_stops_in_one_line(tmp_path, check_datasets):
    void = dict(type="EngineToySegmentation", num_samples=4, size=32, void=True)
    cfg = toy_config(
        tmp_path,
        model=dict(type="Segmentor", model=TINY_TIRAMISU),
        train_dataloader=dict(batch_size=2, dataset=void),
        val_dataloader=dict(batch_size=2, dataset=void),
        check_datasets=check_datasets,  # the toy's check reads nothing: the loop is what notices
    )
    with pytest.raises(DatasetError, match=r"^every one of the 2 batches of epoch 1 had a loss of exactly 0, .*"):
        Runner(cfg).train()
    assert not (tmp_path / "last.pth").exists()
