from tests.tool_loader import load_tool


def test_dsod300_inference_benchmark_times_the_network_and_the_whole_predict(capsys):
    load_tool("benchmark").main(
        ["dsod300-infer", "--batch-size", "1", "--steps", "1", "--warmup", "0", "--device", "cpu"]
    )
    out = capsys.readouterr().out
    assert "dsod300-infer: batch 1, the model's input size" in out
    rows = {line.split("  ")[0].strip(): float(line.split()[-1]) for line in out.splitlines()[2:]}
    assert set(rows) == {"dsod300 network", "dsod300 + post-processing"} and min(rows.values()) > 0
