"""Each rank's share of the example parquet files, streamed in bounded, shuffled batches.

Every epoch the files are put in a new order (seeded by ``seed + epoch``) and the rows, in that order,
are cut into ``size`` contiguous shares of equal size (±1 row); rank r reads only the row groups that
overlap share r. All ranks run the same number of steps, as collective training requires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ...s3 import is_s3_uri


@dataclass(frozen=True)
class FileSlice:
    path: str
    start: int
    stop: int


def list_parquet_files(directory: str) -> list[tuple[str, int]]:
    """``(path, rows)`` of every data file under ``directory`` (a path or URI), sorted by path; each path
    opens again through :func:`open_filesystem`."""
    fs, root = open_filesystem(directory)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    names = sorted(i.path for i in infos if i.is_file and i.base_name.endswith(".parquet") and not i.base_name.startswith(("_", ".")))
    if isinstance(fs, pafs.LocalFileSystem):
        prefix = ""
    else:  # the scheme and authority the filesystem's paths leave out: "s3a://", "hdfs://namenode:8020"
        uri = directory.rstrip("/")
        prefix = uri[: len(uri) - len(root.rstrip("/"))]
    return [(prefix + name, pq.ParquetFile(fs.open_input_file(name)).metadata.num_rows) for name in names]


def open_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path in it for a local path or a URI, as Spark spells them too (``file:/…``,
    percent-encoded; ``s3a://`` and ``s3n://`` are S3)."""
    if path.startswith("file:"):
        return pafs.LocalFileSystem(), unquote(urlparse(path).path)
    if is_s3_uri(path):
        path = "s3://" + path.split("://", 1)[1]
    return pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)


def steps_per_epoch(files: Sequence[tuple[str, int]], size: int, batch_size: int) -> int:
    """Batches every rank runs per epoch: enough to cover the smallest share once."""
    smallest_share = sum(rows for _, rows in files) // size
    return math.ceil(smallest_share / batch_size)


def rank_share(files: Sequence[tuple[str, int]], rank: int, size: int, seed: int, epoch: int) -> list[FileSlice]:
    """Row ranges of the (epoch-shuffled) files that make up ``rank``'s share."""
    order = np.random.default_rng([seed, epoch]).permutation(len(files))
    total = sum(rows for _, rows in files)
    low, high = rank * total // size, (rank + 1) * total // size
    slices, offset = [], 0
    for position in order:
        path, rows = files[position]
        start, stop = max(low, offset), min(high, offset + rows)
        if start < stop:
            slices.append(FileSlice(path, start - offset, stop - offset))
        offset += rows
    return slices


def read_slice(fs: pafs.FileSystem, piece: FileSlice, columns: list[str], read_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows ``[start, stop)`` of one file, reading only the row groups that overlap them."""
    parquet = pq.ParquetFile(fs.open_input_file(open_filesystem(piece.path)[1]))
    offset = 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if offset < piece.stop and offset + rows > piece.start:
            position = offset
            for batch in parquet.iter_batches(batch_size=read_rows, row_groups=[group], columns=columns):
                low, high = max(piece.start - position, 0), min(piece.stop - position, batch.num_rows)
                if low < high:
                    yield batch.slice(low, high - low)
                position += batch.num_rows
        offset += rows


def to_numpy(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Scalars → 1-d arrays; fixed-width lists → 2-d arrays."""
    arrays = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_list(column.type):
            flat = pc.list_flatten(column).to_numpy()
            arrays[name] = flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 0)
        else:
            arrays[name] = column.to_numpy()
    return arrays


def shuffled_batches(
    slices: Sequence[FileSlice],
    columns: list[str],
    batch_size: int,
    steps: int,
    shuffle_buffer: int,
    rng: np.random.Generator,
) -> Iterator[dict[str, np.ndarray]]:
    """``steps`` batches of ``batch_size`` rows (the last may be short), shuffled within windows of ``shuffle_buffer`` rows."""
    if steps <= 0 or not slices:
        return
    fs, _ = open_filesystem(slices[0].path)
    read_rows = max(1, min(shuffle_buffer, 8192))
    window: list[dict[str, np.ndarray]] = []
    window_rows, emitted = 0, 0

    def flush(final: bool) -> Iterator[dict[str, np.ndarray]]:
        nonlocal window, window_rows, emitted
        merged = {name: np.concatenate([part[name] for part in window]) for name in columns}
        order = rng.permutation(window_rows)
        merged = {name: values[order] for name, values in merged.items()}
        usable = window_rows if final else window_rows - window_rows % batch_size
        for start in range(0, usable, batch_size):
            if emitted == steps:
                return
            emitted += 1
            yield {name: values[start : start + batch_size] for name, values in merged.items()}
        rest = {name: values[usable:] for name, values in merged.items()}
        window, window_rows = ([rest], window_rows - usable) if window_rows > usable else ([], 0)

    for piece in slices:
        for batch in read_slice(fs, piece, columns, read_rows):
            window.append(to_numpy(batch))
            window_rows += batch.num_rows
            if window_rows >= shuffle_buffer:
                yield from flush(final=False)
                if emitted == steps:
                    return
    if window_rows:
        yield from flush(final=True)
