"""The benchmark report on disk: ``results.json``, ``results.md`` and ``results.png`` (metrics per model), plus
``overlap.png`` (how much the channels' lists overlap) when a row merges channels.

Every file is written to a temporary name and renamed, so readers see each one whole or not at all.
An ``s3://`` destination is written to a local temporary folder first, then uploaded with boto3; other
URIs (``hdfs://``) go through Spark's Hadoop filesystem. What cannot be written goes to a local fallback folder.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

from .storage import write_local_atomically

PLOT_FILE = "results.png"
OVERLAP_FILE = "overlap.png"
TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("precision", "P@{k}", "{:.4f}"),
    ("recall", "R@{k}", "{:.4f}"),
    ("map", "MAP@{k}", "{:.4f}"),
    ("ndcg", "NDCG@{k}", "{:.4f}"),
    ("hit_rate", "HR@{k}", "{:.4f}"),
    ("coverage", "coverage", "{:.4f}"),
    ("queries", "queries", "{:d}"),
    ("vs_best", "vs best (R@{k})", "{:+.4f}"),
    ("seeds", "seeds: R@{k} mean ± sd", "{:.4f}"),
    ("params_source", "params", "{}"),
    ("fit_seconds", "fit s", "{:.1f}"),
    ("recommend_seconds", "rec+eval s", "{:.1f}"),
)
# (key in a result row, axis label); all lie in [0, 1] so they share one axis.
INTERVAL_COLUMNS = ("recall", "ndcg")
"""Cells shown as ``value ± half the width of the row's 95 % interval`` (every metric's interval is in the JSON)."""
OPTIONAL_COLUMNS = ("vs_best", "seeds")
"""Shown only when some row has them (reports written before intervals and seeds existed keep their table)."""
TUNED = "tuned"
"""``params`` is shown only when some row was refitted with tuned parameters (``benchmark --params``)."""
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
        intervals = [(row.get("ci") or {}).get(key) for key, _ in metrics]  # error bars: the 95 % interval
        errors = [
            [max(0.0, value - ci["ci_low"]) if ci else 0.0 for value, ci in zip(values, intervals)],
            [max(0.0, ci["ci_high"] - value) if ci else 0.0 for value, ci in zip(values, intervals)],
        ]
        bars = axes.bar(
            positions, values, width, label=row["model"],
            **({"yerr": errors, "capsize": 1.5, "error_kw": {"elinewidth": 0.6}} if any(intervals) else {}),
        )
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


def overlap_png(analysis: dict[str, Any], title: str) -> bytes:
    """A heatmap of the mean Jaccard overlap between each pair of channels' top-K lists, as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(analysis["channels"])
    values = [[1.0 if a == b else (analysis["overlap"][a].get(b) or 0.0) for b in names] for a in names]
    size = 2.5 + 0.9 * len(names)
    figure = Figure(figsize=(size + 1.2, size), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    axes.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axes, label="mean Jaccard of top-K lists")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def channel_table(row: dict[str, Any], k: int) -> str:
    """A merged row's channels: own R@K and NDCG@K, queries only it hits, its share of the merged list."""
    analysis = row["channel_analysis"]
    lines = [
        f"Channels of {row['model']} (merged R@{k} {analysis['merged']['recall']:.4f}):",
        "",
        f"| channel | R@{k} | NDCG@{k} | queries hit | only this channel hits | share of merged | alone in merged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figures in analysis["channels"].items():
        lines.append(
            f"| {name} | {figures['recall']:.4f} | {figures['ndcg']:.4f} | {figures['hit_queries']:,} | "
            f"{figures['unique_hits']:,} | {figures.get('merged_share', 0.0):.3f} | {figures.get('sole_share', 0.0):.3f} |"
        )
    return "\n".join(lines)


def table_cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """One cell: a dash when missing; ``value ± half-width`` for ``INTERVAL_COLUMNS`` with an interval; the
    paired difference with its interval, or ``best``, for ``vs_best``; the seed spread for ``seeds``."""
    if key.startswith("at_k:"):
        _, each, metric = key.split(":")
        value = ((row.get("at_k") or {}).get(each) or {}).get(metric)
    else:
        value = row.get(key)
    if value is None:
        return "–"
    if key == "vs_best":
        if value.get("best"):
            return "best"
        difference = value.get("recall")
        if difference is None:
            return "–"
        return f"{fmt.format(difference['difference'])} [{difference['ci_low']:+.4f}, {difference['ci_high']:+.4f}]"
    if key == "params_source":
        score = row.get("validation_score")
        return f"{value} (validation {score:.4f})" if value == TUNED and score is not None else str(value)
    if key == "seeds":
        if value == "deterministic":
            return "deterministic"
        if "seed_mean" in row:
            return f"{fmt.format(row['seed_mean']['recall'])} ± {fmt.format(row['seed_std']['recall'])} ({len(value)} seeds)"
        return "seed " + ", ".join(str(seed) for seed in value)
    ci = (row.get("ci") or {}).get(key) if key in INTERVAL_COLUMNS else None
    if ci is not None:
        return f"{fmt.format(value)} ± {fmt.format((ci['ci_high'] - ci['ci_low']) / 2)}"
    return fmt.format(value)


def markdown_table(rows: list[dict[str, Any]], k: int, bootstrap: dict[str, Any] | None = None) -> str:
    """One Markdown row per result row; a missing value shows as a dash. With intervals (``bootstrap``: the
    report's ``bootstrap`` settings), lines under the table say how they were made and which rows differ from
    the best beyond the noise of the query sample."""
    tuned = any(row.get("params_source") == TUNED for row in rows)
    columns = [
        column for column in TABLE_COLUMNS
        if (column[0] not in OPTIONAL_COLUMNS or any(row.get(column[0]) is not None for row in rows))
        and (column[0] != "params_source" or tuned)
    ]
    longer = sorted({int(key) for row in rows for key in (row.get("at_k") or {})})
    at = next(index for index, column in enumerate(columns) if column[0] == "coverage")
    columns[at + 1:at + 1] = [
        (f"at_k:{each}:{metric}", f"{label}@{each}", "{:.4f}") for each in longer for metric, label in (("recall", "R"), ("ndcg", "NDCG"))
    ]
    header = [title.format(k=k) for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(table_cell(row, key, fmt) for key, _, fmt in columns) + " |")
    notes = table_notes(rows, k, bootstrap)
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")


def table_notes(rows: list[dict[str, Any]], k: int, bootstrap: dict[str, Any] | None) -> list[str]:
    notes = []
    if any(row.get("ci") for row in rows):
        queries = max((row.get("queries") or 0 for row in rows), default=0)
        how = (
            f" ({bootstrap['resamples']:,} Poisson resamples, seed {bootstrap['seed']})" if bootstrap else ""
        )
        notes.append(
            f"R@{k} and NDCG@{k}: value ± half the width of its 95 % bootstrap interval over the {queries:,} "
            f"queries{how}; every metric's interval is in results.json."
        )
    compared = [row for row in rows if isinstance(row.get("vs_best"), dict) and not row["vs_best"].get("best")]
    best = next((row["model"] for row in rows if (row.get("vs_best") or {}).get("best")), None)
    if best is not None:
        real = [row["model"] for row in compared if row["vs_best"].get("recall", {}).get("excludes_zero")]
        noise = [row["model"] for row in compared if not row["vs_best"].get("recall", {}).get("excludes_zero")]
        notes.append(
            f"vs best: the paired difference in R@{k} from {best} on the same queries, with its 95 % interval. "
            f"Real differences (interval excludes 0): {', '.join(real) or 'none'}. "
            f"Not distinguishable from {best} on these queries: {', '.join(noise) or 'none'}."
        )
    for row in rows:
        comparisons = [(k, row.get("vs_best_channel"))]
        comparisons += [(int(each), values.get("vs_best_channel")) for each, values in (row.get("at_k") or {}).items()]
        for at, against in comparisons:
            if not (against and against.get("recall")):
                continue
            difference = against["recall"]
            verdict = "a real difference" if difference.get("excludes_zero") else "not distinguishable on these queries"
            notes.append(
                f"{row['model']} against its best channel at K = {at}, {against['baseline']}: R@{at} "
                f"{difference['difference']:+.4f} [{difference['ci_low']:+.4f}, {difference['ci_high']:+.4f}], {verdict}."
            )
    if any(row.get("params_source") == TUNED for row in rows):
        notes.append(
            "params: tuned = refitted on the whole train with the parameters `tune` chose on the validation split "
            "carved from train (its validation score in brackets, in tune's metric); defaults = the row's shipped "
            "settings. Each row's parameters are in results.json."
        )
    if any(isinstance(row.get("seeds"), list) and "seed_mean" in row for row in rows):
        notes.append(
            f"seeds: mean ± sample standard deviation of R@{k} over the seeds fitted (model variance); the other "
            "columns of such a row are its first seed's fit. A deterministic row is fitted once."
        )
    return notes


def markdown_report(document: dict[str, Any]) -> str:
    split = ", ".join(f"{key} {value:,}" for key, value in document["split"].items())
    table = markdown_table(document["results"], document["k"], document.get("bootstrap"))
    source = document.get("source")
    data = f"Data: {source_line(source)}.\n\n" if source else ""
    merged = [row for row in document["results"] if row.get("channel_analysis")]
    channels = "".join(f"\n{channel_table(row, document['k'])}\n" for row in merged)
    heatmap = f"\n![channel overlap]({OVERLAP_FILE})\n" if merged else ""
    return (
        f"# Benchmark: {document['dataset']}, K = {document['k']}\n\n{data}Split: {split}.\n\n"
        f"{table}\n\n![results]({PLOT_FILE})\n{channels}{heatmap}"
    )


def source_line(source: dict[str, Any]) -> str:
    """One line naming an event log's source and how it was read (``data.event_log`` description)."""
    columns = ", ".join(f"{ours}={theirs}" for ours, theirs in source["columns"].items())
    parts = [f"{source['source']} ({source['format']}; {columns})", f"timestamps: {source['timestamps']}", source["feedback"]]
    parts += [f"{kind}: {source[kind]}" for kind in ("items", "users") if source.get(kind)]
    if source.get("ignored"):
        parts.append(f"ignored: {source['ignored']}")
    return "; ".join(parts)


def report_files(document: dict[str, Any]) -> dict[str, bytes]:
    """``results.json``, ``results.md`` and ``results.png`` of a benchmark's results document."""
    title = f"{document['dataset']}, K = {document['k']}"
    files = {
        "results.json": (json.dumps(document, indent=2) + "\n").encode("utf-8"),
        "results.md": markdown_report(document).encode("utf-8"),
        PLOT_FILE: plot_png(document["results"], document["k"], title),
    }
    merged = next((row for row in document["results"] if row.get("channel_analysis")), None)
    if merged is not None:  # the first merged row's channels (rows merging the same channels overlap the same)
        files[OVERLAP_FILE] = overlap_png(merged["channel_analysis"], f"{title}: channels of {merged['model']}")
    return files


def write_report(document: dict[str, Any], output: str) -> None:
    """Write the report files to a local folder, to an ``s3://`` prefix (via a local temporary folder and
    boto3) or to any other URI through Spark's Hadoop filesystem.

    When writing fails after all (a full disk, expired credentials, a changed bucket policy), nothing is lost:
    the same files go to a local fallback folder and the ``OutputWriteError`` raised names the destination,
    the reason and that folder (exit code 4 in the CLI and the jobs).
    """
    files = report_files(document)  # everything rendered before anything is written
    try:
        _write_files(files, output)
    except Exception as error:  # noqa: BLE001 - whatever stopped the write, the results are kept
        from .destinations import keep_locally

        raise keep_locally(files, output, error) from None


def _write_files(files: dict[str, bytes], output: str) -> None:
    from . import s3
    from .destinations import is_local, local_path

    if is_local(output):
        for name, data in files.items():
            write_local_atomically(os.path.join(local_path(output), name), data)
    elif s3.is_s3_uri(output):
        with tempfile.TemporaryDirectory(prefix="spark-retrieval-report-") as folder:
            for name, data in files.items():
                write_local_atomically(os.path.join(folder, name), data)
            s3.upload_directory(folder, output)
    else:
        from pyspark.sql import SparkSession

        from .storage import replace_bytes

        spark = SparkSession.getActiveSession()
        for name, data in files.items():
            replace_bytes(spark, f"{output.rstrip('/')}/{name}", data)
