"""The benchmark report on disk: ``results.json``, ``results.md`` and ``results.png`` (metrics per model).

Every file is written to a temporary name and renamed, so readers see each one whole or not at all.
An ``s3://`` destination is written to a local temporary folder first, then uploaded with boto3.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

from .storage import write_local_atomically

PLOT_FILE = "results.png"
TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("precision", "P@{k}", "{:.4f}"),
    ("recall", "R@{k}", "{:.4f}"),
    ("map", "MAP@{k}", "{:.4f}"),
    ("ndcg", "NDCG@{k}", "{:.4f}"),
    ("hit_rate", "HR@{k}", "{:.4f}"),
    ("coverage", "coverage", "{:.4f}"),
    ("queries", "queries", "{:d}"),
    ("fit_seconds", "fit s", "{:.1f}"),
    ("recommend_seconds", "rec+eval s", "{:.1f}"),
)
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


def markdown_table(rows: list[dict[str, Any]], k: int) -> str:
    """One Markdown row per result row; a missing value shows as a dash."""
    header = [title.format(k=k) for _, title, _ in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [fmt.format(row[key]) if row.get(key) is not None else "–" for key, _, fmt in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(document: dict[str, Any]) -> str:
    split = ", ".join(f"{key} {value:,}" for key, value in document["split"].items())
    return (
        f"# Benchmark: {document['dataset']}, K = {document['k']}\n\nSplit: {split}.\n\n"
        f"{markdown_table(document['results'], document['k'])}\n\n![results]({PLOT_FILE})\n"
    )


def report_files(document: dict[str, Any]) -> dict[str, bytes]:
    """``results.json``, ``results.md`` and ``results.png`` of a benchmark's results document."""
    title = f"{document['dataset']}, K = {document['k']}"
    return {
        "results.json": (json.dumps(document, indent=2) + "\n").encode("utf-8"),
        "results.md": markdown_report(document).encode("utf-8"),
        PLOT_FILE: plot_png(document["results"], document["k"], title),
    }


def write_report(document: dict[str, Any], output: str) -> None:
    """Write the report files to a local folder, or to an ``s3://`` prefix via a local temporary folder."""
    from . import s3

    files = report_files(document)  # everything rendered before anything is written
    if not s3.is_s3_uri(output):
        for name, data in files.items():
            write_local_atomically(os.path.join(output, name), data)
        return
    with tempfile.TemporaryDirectory(prefix="spark-retrieval-report-") as folder:
        for name, data in files.items():
            write_local_atomically(os.path.join(folder, name), data)
        s3.upload_directory(folder, output)
