"""A two-tower model's weights outside torch: as bytes, as a table, as a hash, and as per-epoch checkpoints.

Weights ↔ bytes ↔ a table of binary chunks, so a model's weights are saved like any other table. Rank 0
writes that table as a parquet file at the end of training (``write_state``), the fitted model reads it with
Spark, and the tasks that embed users or items read the files themselves (``read_state_files``): the weights
never pass through the driver. ``parameter_hash`` tells whether two processes or two runs ended with the same
parameters, bit for bit.

Per-epoch training checkpoints: one file, ``<checkpoint_dir>/checkpoint.pt``, written by rank 0 after
every epoch, atomically (a temporary file renamed over the previous one: a reader, or a run killed
mid-write, never sees half a file), to a local path or any URI pyarrow opens (``s3://``, ``hdfs://``).

A checkpoint (``torch.save`` of a dict) holds the format version, the configuration fingerprint it was
written for, ``epochs_done``, the network's and the optimizer's (Adam) state, the loss history and every
rank's torch generator state. ``fit`` resumes from it when its fingerprint — the network spec, loss,
objective and optimizer settings, seed, sampling settings and the shape of the training data — matches
the new run's and it has no more epochs than the run asks for; otherwise it is ignored with a warning
on the driver (training starts from the first epoch and overwrites it after that epoch).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import OrderedDict
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from pyspark.sql import DataFrame

from ...errors import OutputWriteError
from ...storage import write_failure
from .shards import open_filesystem

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 2
CHUNK = "chunk"
DATA = "data"
CHUNK_BYTES = 16 << 20
STATE_FILE = "part-00000-weights.parquet"
# Weights a Python worker keeps between tasks, by their files: two, so that a plan embedding with two models
# (a merged row's two-tower channels) does not reread them per task. Each is the model's full weights.
STATE_CACHE_ENTRIES = 2
_read_states: "OrderedDict[tuple[str, ...], bytes]" = OrderedDict()


# -- weights ---------------------------------------------------------------------------------------
def state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def parameter_hash(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the module's state, in order: equal hashes ⇔ identical parameters."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def bytes_from_table(table: DataFrame) -> bytes:
    """The weights collected to the driver (``TwoTowerModel.network()``, or a table with no files behind it)."""
    return b"".join(bytes(row[DATA]) for row in table.orderBy(CHUNK).collect())


def write_state(directory: str, data: bytes) -> str:
    """Rank 0: the weights as one parquet file of ``chunk, data`` rows (the ``state`` table) in ``directory``, a
    path or any URI pyarrow opens; returns ``directory``. A refused write is one ``OutputWriteError`` line."""
    starts = range(0, len(data), CHUNK_BYTES)
    table = pa.table(
        {
            CHUNK: pa.array(range(len(starts)), pa.int32()),
            DATA: pa.array([data[start : start + CHUNK_BYTES] for start in starts], pa.large_binary()),
        },
        schema=pa.schema([pa.field(CHUNK, pa.int32(), False), pa.field(DATA, pa.large_binary(), False)]),
    )
    target = f"{directory.rstrip('/')}/{STATE_FILE}"
    try:
        fs, path = open_filesystem(target)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            pq.write_table(table, stream, row_group_size=1)
    except Exception as error:
        reason = write_failure(error) or " ".join(f"{type(error).__name__}: {error}".split())
        raise OutputWriteError(f"could not write the trained weights {target}: {reason}", destination=target) from None
    return directory


def read_state_files(paths: Sequence[str]) -> bytes:
    """The weights from the files of a ``state`` table (``DataFrame.inputFiles()``), read where this runs: in an
    executor's Python worker, without the driver. Kept for the next task of the same worker."""
    key = tuple(sorted(paths))
    if key in _read_states:
        _read_states.move_to_end(key)
        return _read_states[key]
    chunks: list[tuple[int, bytes]] = []
    for uri in key:
        fs, path = open_filesystem(uri)
        with fs.open_input_file(path) as source:
            table = pq.read_table(source, columns=[CHUNK, DATA])
        chunks.extend(zip(table.column(CHUNK).to_pylist(), table.column(DATA).to_pylist()))
    data = b"".join(chunk for _, chunk in sorted(chunks, key=lambda entry: entry[0]))
    _read_states[key] = data
    while len(_read_states) > STATE_CACHE_ENTRIES:
        _read_states.popitem(last=False)
    return data


# -- per-epoch checkpoints -------------------------------------------------------------------------
def checkpoint_path(directory: str) -> str:
    return f"{directory.rstrip('/')}/{CHECKPOINT_FILE}"


def checkpoint_record(
    fingerprint: str,
    epochs_done: int,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    history: list[dict[str, float]],
    torch_rng: list[torch.Tensor],
    best: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``best``: with validation, the best epoch so far, its score and weights, and whether training stopped."""
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "epochs_done": epochs_done,
        "model": model,
        "optimizer": optimizer,
        "history": list(history),
        "torch_rng": list(torch_rng),
        "best": best,
    }


def read_checkpoint(directory: str | None) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` as written, or None when there is none."""
    if not directory:
        return None
    fs, path = open_filesystem(checkpoint_path(directory))
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=False)


def unusable_because(checkpoint: dict[str, Any], fingerprint: str, epochs: int) -> str | None:
    """Why this run cannot resume from ``checkpoint`` (None: it can)."""
    if checkpoint.get("format") != FORMAT:
        return f"it has format {checkpoint.get('format')!r}, this version reads format {FORMAT}"
    if checkpoint.get("fingerprint") != fingerprint:
        return "it was written for another configuration or other training data"
    if checkpoint["epochs_done"] > epochs:
        return f"it holds {checkpoint['epochs_done']} epochs, more than the {epochs} asked for"
    return None


def load_checkpoint(directory: str | None, fingerprint: str, epochs: int) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` when this run can resume from it, else None (rank 0, silently)."""
    try:
        checkpoint = read_checkpoint(directory)
    except Exception:  # unreadable: the driver has already warned
        return None
    if checkpoint is None or unusable_because(checkpoint, fingerprint, epochs) is not None:
        return None
    return checkpoint


def resumable_epochs(directory: str | None, fingerprint: str, epochs: int) -> int | None:
    """On the driver, before training: the epochs a run would resume after (None: starts afresh).

    A checkpoint that cannot be used is reported here with a ``UserWarning``.
    """
    try:
        checkpoint = read_checkpoint(directory)
    except Exception as error:  # noqa: BLE001 - any unreadable file is only skipped
        warnings.warn(f"ignoring the unreadable checkpoint {checkpoint_path(directory)}: {error!r}", stacklevel=3)
        return None
    if checkpoint is None:
        return None
    reason = unusable_because(checkpoint, fingerprint, epochs)
    if reason is not None:
        warnings.warn(
            f"ignoring the checkpoint {checkpoint_path(directory)}: {reason}; training from the first epoch "
            "(the checkpoint is replaced after it)",
            stacklevel=3,
        )
        return None
    return int(checkpoint["epochs_done"])


def save_checkpoint(directory: str, checkpoint: dict[str, Any]) -> None:
    """Write to a temporary name, then move over the previous checkpoint: a reader never sees half a file.

    A write the filesystem refuses is an ``OutputWriteError`` naming the checkpoint and the reason in one line.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    try:
        fs, path = open_filesystem(checkpoint_path(directory))
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        temporary = f"{path}.tmp"
        with fs.open_output_stream(temporary) as stream:
            stream.write(buffer.getvalue())
        fs.move(temporary, path)
    except Exception as error:
        reason = write_failure(error)
        if reason is None:
            reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise OutputWriteError(f"could not write the checkpoint {checkpoint_path(directory)}: {reason}",
                               destination=checkpoint_path(directory)) from None
