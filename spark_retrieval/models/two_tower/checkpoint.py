"""Per-epoch training checkpoints: one file, ``<checkpoint_dir>/checkpoint.pt``, written by rank 0 after
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

import io
import warnings
from typing import Any

import pyarrow.fs as pafs
import torch

from .shards import open_filesystem

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 2


def checkpoint_path(directory: str) -> str:
    return f"{directory.rstrip('/')}/{CHECKPOINT_FILE}"


def checkpoint_record(
    fingerprint: str,
    epochs_done: int,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    history: list[dict[str, float]],
    torch_rng: list[torch.Tensor],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "epochs_done": epochs_done,
        "model": model,
        "optimizer": optimizer,
        "history": list(history),
        "torch_rng": list(torch_rng),
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
    """Write to a temporary name, then move over the previous checkpoint: a reader never sees half a file."""
    fs, path = open_filesystem(checkpoint_path(directory))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    temporary = f"{path}.tmp"
    with fs.open_output_stream(temporary) as stream:
        stream.write(buffer.getvalue())
    fs.move(temporary, path)
