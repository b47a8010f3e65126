"""Per-epoch training checkpoints: written by rank 0, atomically, to a path or URI (pyarrow filesystems).

A checkpoint records the configuration fingerprint it was written for; a run whose fingerprint differs
(other hyper-parameters, other data) does not resume from it.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import pyarrow.fs as pafs
import torch

from .shards import open_filesystem

CHECKPOINT_FILE = "checkpoint.pt"


def checkpoint_path(directory: str) -> str:
    return f"{directory.rstrip('/')}/{CHECKPOINT_FILE}"


def load_checkpoint(directory: str | None, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` when there is one for this ``fingerprint``, else None."""
    if not directory:
        return None
    fs, path = open_filesystem(checkpoint_path(directory))
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        checkpoint = torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=False)
    if checkpoint.get("fingerprint") != fingerprint:
        print(
            f"[two-tower] ignoring the checkpoint in {directory}: it was written for another configuration "
            "or other data; training from the first epoch",
            file=sys.stderr,
            flush=True,
        )
        return None
    return checkpoint


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
