"""tools/test.py's early-exit report: anytime accuracy and FLOPs per exit, the budgeted-batch sweep, and the files it
writes (a JSON of both, a PNG plot of accuracy against mean FLOPs, and the calibrated thresholds per budget that
adaptive inference reads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from densevision.early_exit.budget import BudgetPoint, anytime_accuracy, budget_sweep

if TYPE_CHECKING:
    from densevision.early_exit.metric import EarlyExitAccuracy

__all__ = ["REPORT_FILES", "matching_budget", "write_budget_report"]

# What write_budget_report writes into its folder (the folder of test.py's metrics JSON).
REPORT_FILES = {"report": "early_exit.json", "plot": "early_exit.png", "thresholds": "exit_thresholds.json"}
# A budget "matches" the last exit when its test accuracy is within this of the last exit's (0.5 points).
MATCH_TOLERANCE = 0.005


def matching_budget(points: list[BudgetPoint], last_accuracy: float) -> BudgetPoint | None:
    """The cheapest budget (lowest mean test FLOPs) whose test accuracy is within 0.5 points of ``last_accuracy``."""
    matching = [p for p in points if p.test.accuracy >= last_accuracy - MATCH_TOLERANCE]
    return min(matching, key=lambda p: p.test.mean_flops, default=None)


def _plot(path: Path, exit_flops: list[int], anytime: list[float], points: list[BudgetPoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    ordered = sorted(points, key=lambda p: p.test.mean_flops)
    axes.plot(
        [p.test.mean_flops / 1e6 for p in ordered],
        [100 * p.test.accuracy for p in ordered],
        "-",
        color="tab:blue",
        label="budgeted batch (thresholds from val)",
    )
    axes.plot([f / 1e6 for f in exit_flops], [100 * a for a in anytime], "o", color="tab:orange", label="each exit")
    for index, (flops, accuracy) in enumerate(zip(exit_flops, anytime)):
        axes.annotate(f"exit {index}", (flops / 1e6, 100 * accuracy), textcoords="offset points", xytext=(4, -12))
    axes.set_xlabel("mean multiply-adds per image (M)")
    axes.set_ylabel("test top-1 accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _table(exit_flops: list[int], anytime: list[float], points: list[BudgetPoint], match: BudgetPoint | None) -> str:
    lines = ["anytime prediction (test)", f"{'exit':>6s} {'MFLOPs':>10s} {'top1':>8s}"]
    lines += [f"{e:>6d} {f / 1e6:>10.2f} {a:>8.4f}" for e, (f, a) in enumerate(zip(exit_flops, anytime))]
    lines += ["budgeted batch (thresholds calibrated on val, applied to test)"]
    lines += [f"{'q':>6s} {'MFLOPs':>10s} {'top1':>8s}  images leaving at each exit (%)"]
    for p in points:
        fractions = " ".join(f"{100 * f:5.1f}" for f in p.test.exit_fractions)
        lines.append(f"{p.q:>6.2f} {p.test.mean_flops / 1e6:>10.2f} {p.test.accuracy:>8.4f}  {fractions}")
    if match is None:
        lines.append("no budget is within 0.5 points of the last exit's accuracy")
    else:
        lines.append(
            f"q={match.q:.2f} is within 0.5 points of the last exit ({match.test.accuracy:.4f} vs {anytime[-1]:.4f}) "
            f"at {match.test.mean_flops / exit_flops[-1]:.1%} of its FLOPs"
        )
    return "\n".join(lines)


def write_budget_report(task: nn.Module, val: EarlyExitAccuracy, test: EarlyExitAccuracy, out_dir: Path) -> str:
    """Anytime accuracy per exit and the budget sweep of an EarlyExitClassifier, from two metrics that saw the val
    and the test split; FLOPs counted at the test images' size. Writes ``REPORT_FILES`` into ``out_dir``, returns the
    table."""
    from densevision.engine.launch import write_json

    val_outcomes, test_outcomes = val.exit_outcomes(), test.exit_outcomes()
    image_shape = test.records[0]["image_shape"]
    exit_flops = task.exit_flops(image_shape)
    anytime = anytime_accuracy(test_outcomes[1])
    points = budget_sweep(val_outcomes, test_outcomes, exit_flops)
    match = matching_budget(points, anytime[-1])
    out_dir = Path(out_dir)
    report: dict[str, Any] = {
        "image_shape": list(image_shape),
        "val_images": val_outcomes[0].shape[1],
        "test_images": test_outcomes[0].shape[1],
        "anytime": [{"exit": e, "flops": f, "top1": a} for e, (f, a) in enumerate(zip(exit_flops, anytime))],
        "budgeted": [
            {
                "q": p.q,
                "mean_flops": p.test.mean_flops,
                "top1": p.test.accuracy,
                "exit_fractions": p.test.exit_fractions,
                "val_mean_flops": p.val.mean_flops,
                "val_top1": p.val.accuracy,
                "thresholds": p.thresholds,
            }
            for p in points
        ],
        "matches_last_exit": None
        if match is None
        else {"q": match.q, "mean_flops": match.test.mean_flops, "top1": match.test.accuracy},  # fmt: skip
    }
    write_json(report, out_dir / REPORT_FILES["report"])
    # Adaptive inference picks the budget whose mean FLOPs on val fit its --budget; null thresholds are +inf (no image
    # leaves there) except the last exit's, which takes every image that reaches it.
    calibration = {
        "exit_flops": exit_flops,
        "image_shape": list(image_shape),
        "budgets": [{"q": p.q, "mean_flops": p.val.mean_flops, "thresholds": p.thresholds} for p in points],
    }
    write_json(calibration, out_dir / REPORT_FILES["thresholds"])
    _plot(out_dir / REPORT_FILES["plot"], exit_flops, anytime, points)
    table = _table(exit_flops, anytime, points, match)
    files = ", ".join(str(out_dir / name) for name in REPORT_FILES.values())
    return f"{table}\nwritten: {files}"
