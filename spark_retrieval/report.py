"""The benchmark report on disk: ``results.json``, ``results.md`` and ``results.png`` (metrics per model).

Every file is written to a temporary name and renamed, so readers see each one whole or not at all.
An ``s3://`` destination is written to a local temporary folder first, then uploaded with boto3.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import TYPE_CHECKING, Any

from .storage import write_local_atomically

if TYPE_CHECKING:
    from .benchmark import BenchmarkResult

PLOT_FILE = "results.png"
# (key in a result row, axis label); all lie in [0, 1] so they share one axis.
PLOTTED_METRICS = (
    ("precision", "P@{k}"),
    ("recall", "R@{k}"),
    ("map", "MAP@{k}"),
    ("ndcg", "NDCG@{k}"),
    ("hit_rate", "HR@{k}"),
    ("coverage", "coverage"),
)


def plot_png(rows: list[dict[str, Any]], k: int, title: str) -> bytes:
    """A grouped bar chart: one group per metric, one bar per model, as PNG bytes (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [(key, label.format(k=k)) for key, label in PLOTTED_METRICS if any(row.get(key) is not None for row in rows)]
    figure = Figure(figsize=(min(14.0, 7.0 + 0.5 * len(rows)), 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(rows))
    for index, row in enumerate(rows):
        positions = [m + (index - (len(rows) - 1) / 2) * width for m in range(len(metrics))]
        values = [row.get(key) or 0.0 for key, _ in metrics]
        bars = axes.bar(positions, values, width, label=row["model"])
        axes.bar_label(bars, labels=[f"{value:.3f}" for value in values], fontsize=6, rotation=90, padding=2)
    axes.set_xticks(range(len(metrics)), [label for _, label in metrics])
    axes.set_ylabel("value")
    axes.set_ylim(0, max([row.get(key) or 0.0 for row in rows for key, _ in metrics] + [0.01]) * 1.25)
    axes.set_title(title)
    axes.legend(fontsize=8, ncols=min(4, max(1, len(rows))), loc="upper left")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_report(result: "BenchmarkResult") -> str:
    split = ", ".join(f"{key} {value:,}" for key, value in result.split.items())
    return (
        f"# Benchmark: {result.dataset}, K = {result.k}\n\nSplit: {split}.\n\n{result.to_markdown()}\n\n"
        f"![results]({PLOT_FILE})\n"
    )


def report_files(result: "BenchmarkResult") -> dict[str, bytes]:
    title = f"{result.dataset}, K = {result.k}"
    return {
        "results.json": (json.dumps(result.to_json(), indent=2) + "\n").encode("utf-8"),
        "results.md": markdown_report(result).encode("utf-8"),
        PLOT_FILE: plot_png(result.results, result.k, title),
    }


def write_report(result: "BenchmarkResult", output: str) -> None:
    """Write the report files to a local folder, or to an ``s3://`` prefix via a local temporary folder."""
    from . import s3

    files = report_files(result)  # everything rendered before anything is written
    if not s3.is_s3_uri(output):
        for name, data in files.items():
            write_local_atomically(os.path.join(output, name), data)
        return
    with tempfile.TemporaryDirectory(prefix="spark-retrieval-report-") as folder:
        for name, data in files.items():
            write_local_atomically(os.path.join(folder, name), data)
        s3.upload_directory(folder, output)
