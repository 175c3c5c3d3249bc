"""tools/gpu_checks.sh runs only where a GPU is lent, minutes at a time: every benchmark and variant it names must
exist, or the device time is lost to a typo."""

import shlex
from pathlib import Path

from tests.tool_loader import load_tool

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_checks.sh"


def _bench_calls() -> list[list[str]]:
    text = SCRIPT.read_text().replace("\\\n", " ")
    return [shlex.split(line, comments=True)[1:] for line in text.splitlines() if line.strip().startswith("bench ")]


def test_every_benchmark_variant_the_gpu_script_names_exists():
    benchmark = load_tool("benchmark")
    calls = _bench_calls()
    assert len(calls) >= 5
    for _limit, _name, benchmark_name, *args in calls:
        args = [a for a in args if a != ";;"]
        only = args[args.index("--only") + 1 :]
        only = only[: next((i for i, a in enumerate(only) if a.startswith("--")), len(only))]
        variants = benchmark.BENCHMARKS[benchmark_name]()
        assert only and set(only) <= set(variants), (benchmark_name, set(only) - set(variants))
        benchmark.parse_args([benchmark_name, *args, "--device", "cpu"])  # the options parse
