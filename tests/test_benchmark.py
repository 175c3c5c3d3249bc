"""tools/benchmark.py through its command line: each variant in its own process, the table and the JSON records.
Only that it runs and reports is tested here, never how fast."""

import json

import torch

from tests.tool_loader import load_tool


def _rows(out: str) -> dict[str, list[str]]:
    """The table's rows by variant name: the cells after the name."""
    return {line.split("  ")[0].strip(): line.split("  ")[1:] for line in out.splitlines()[2:] if line.strip()}


def test_dsod300_inference_benchmark_times_the_network_and_the_whole_predict(capsys):
    arguments = ["dsod300-infer", "--batch-size", "1", "--steps", "1", "--warmup", "0", "--device", "cpu"]
    assert load_tool("benchmark").main([*arguments, "--only", "dsod300 network", "dsod300 + post-processing"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dsod300-infer: batch 1, 300x300, 1 steps after 0 warm-up, device cpu")
    rows = {line.split("  ")[0].strip(): float(line.split()[-1]) for line in out.splitlines()[2:]}
    assert set(rows) == {"dsod300 network", "dsod300 + post-processing"} and min(rows.values()) > 0


def test_inference_records_compare_each_path_with_float32_eager(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    arguments = ["tiny-infer", "--steps", "1", "--warmup", "0", "--device", "cpu", "--json", str(path)]
    assert load_tool("benchmark").main([*arguments, "--only", "tiny eager", "tiny bf16"]) == 0
    records = {record["variant"]: record for record in json.loads(path.read_text())}
    assert set(records) == {"tiny eager", "tiny bf16"}
    for record in records.values():
        assert record["benchmark"] == "tiny-infer" and record["device"] == "cpu" and record["threads"] >= 1
        assert record["device_name"]  # the CPU model: timings compare only on the same one
        assert record["ms/batch"] > 0 and record["peak RSS MiB"] >= record["added RSS MiB"] >= 0
        assert record["input_size"] == [48, 48] and record["load_1min"] >= 0
    assert records["tiny eager"]["max_abs_diff"] == 0.0 and records["tiny eager"]["path"].endswith("float32")
    assert 0 < records["tiny bf16"]["max_abs_diff"] < 1 or "float32" in records["tiny bf16"]["path"]
    header, columns = capsys.readouterr().out.splitlines()[:2]
    assert header.startswith("tiny-infer: batch 2, 48x48")
    assert columns.split()[:4] == ["variant", "ms/batch", "cpu", "ms/batch"] and "max |diff|" in columns
    assert columns.endswith("added RSS MiB  peak RSS MiB")


def test_training_records_carry_saved_and_peak_memory(tmp_path, capsys):
    path = tmp_path / "train.json"
    arguments = ["dense-block-depth", "--batch-size", "2", "--image-size", "32", "--steps", "1", "--warmup", "0"]
    assert load_tool("benchmark").main([*arguments, "--device", "cpu", "--only", "6 layers", "--json", str(path)]) == 0
    (record,) = json.loads(path.read_text())
    assert record["variant"] == "6 layers" and record["precision"] == "fp32"
    assert record["ms/step"] > 0 and record["saved MiB"] > 0 and record["peak RSS MiB"] > record["saved MiB"]
    assert record["GPU-path ops/step"] > 6 * 8  # forward and backward: at least 4 operators each way per layer
    assert set(_rows(capsys.readouterr().out)) == {"6 layers"}


def test_a_selection_that_matches_nothing_says_so(capsys):
    assert load_tool("benchmark").main(["tiny-infer", "--device", "cpu", "--only", "nothing*"]) == 1
    assert "no variant of tiny-infer matches --only nothing*" in capsys.readouterr().err


def test_every_training_benchmark_of_a_network_has_the_runners_accelerations():
    benchmark = load_tool("benchmark")
    for name, variants in benchmark.BENCHMARKS.items():
        if name == "dense-block-depth":  # a memory figure per depth, not a speed benchmark
            continue
        first = next(iter(variants()))
        assert {f"{first} {acceleration}" for acceleration in benchmark.ACCELERATIONS} <= set(variants()), name


def test_task_level_training_goes_through_the_tasks_loss_compiled_or_not(tmp_path):
    path = tmp_path / "tiny.json"
    arguments = [
        "tiny-train",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--profile",
        "1",
    ]
    only = ["tiny bf16 memory_efficient", "tiny compile"]
    assert load_tool("benchmark").main([*arguments, "--only", *only, "--json", str(path)]) == 0
    records = {record["variant"]: record for record in json.loads(path.read_text())}
    assert set(records) == set(only)
    for record in records.values():
        assert record["ms/step"] > 0 and record["input_size"] == [48, 48]
        profile = record["profile"]
        assert profile["host self ms/step"] > 0 and profile["kernel launches/step"] == 0  # CPU: no device kernels
        assert profile["top host ops (self ms/step, calls/step)"][0][0].startswith(("aten::", "Torch-Compiled", "##"))
    assert records["tiny bf16 memory_efficient"]["saved MiB"] > 0
    # the meta device runs neither autocast nor compiled graphs
    assert records["tiny bf16 memory_efficient"]["GPU-path ops/step"] is None
    assert records["tiny compile"]["GPU-path ops/step"] is None
    assert "saved MiB" not in records["tiny compile"]  # compiled graphs save what autograd's hooks do not see


class _ReadsValues(torch.nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * float(x.mean())  # a value the meta device does not have


def test_gpu_path_operators_of_a_step_that_reads_values_are_left_out():
    benchmark = load_tool("benchmark")
    images = torch.randn(2, 3, 48, 48)
    assert benchmark.gpu_path_operators(benchmark.TrainVariant(lambda: _ReadsValues(3, 2, 1)), images) is None
    assert benchmark.gpu_path_operators(benchmark.tiny_train()["tiny"], images) > 100
