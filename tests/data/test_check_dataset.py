import re

import pytest

from tests.tool_loader import load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("check_dataset")


def _config(tmp_path, dataset):
    path = tmp_path / "cfg.py"
    path.write_text(f"train_dataset = {dataset!r}\n")
    return str(path)


def test_prints_summary(tool, tmp_path, capsys):
    dataset = dict(type="ShapesSegmentation", root=str(tmp_path / "s"), num_train=3, num_val=0, num_test=0,
                   image_size=32)  # fmt: skip
    assert tool.main([_config(tmp_path, dataset)]) == 0
    out = capsys.readouterr().out
    assert "ShapesSegmentation, OK" in out and "3 images" in out
    assert all(name in out for name in ("background", "triangle", "rectangle", "ellipse", "(ignored)"))


def test_reports_bad_file_and_fails(tool, tmp_path, capsys):
    (tmp_path / "cls" / "a").mkdir(parents=True)
    (tmp_path / "cls" / "a" / "x.png").write_bytes(b"broken")
    dataset = dict(type="ImageFolderDataset", root=str(tmp_path / "cls"))
    assert tool.main([_config(tmp_path, dataset)]) == 1
    assert "x.png" in capsys.readouterr().err


def test_unknown_split_is_one_line_listing_defined_datasets(tool, tmp_path, capsys):
    assert tool.main([_config(tmp_path, dict(type="ImageFolderDataset", root="x")), "--split", "val"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^error: .*neither val_dataloader.dataset nor val_dataset.*\['train_dataset'\]$", err.strip())


def test_prefers_the_dataloader_dataset_the_runner_uses(tool, tmp_path, capsys):
    shapes = dict(type="ShapesClassification", root=str(tmp_path / "s"), num_train=3, num_val=0, num_test=0,
                  image_size=32)  # fmt: skip
    path = tmp_path / "cfg.py"
    path.write_text(f"train_dataset = dict(type='Nope')\ntrain_dataloader = dict(batch_size=2, dataset={shapes!r})\n")
    assert tool.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "train_dataloader.dataset" in out and "ShapesClassification, OK" in out and "3 images" in out
