"""Parameters shared by every two-tower estimator and model (``pyspark.ml`` Params), with their checks."""

from __future__ import annotations

import math
import numbers
from typing import Any

from pyspark.ml.param import Params

from ...distributed import BACKENDS, LOCAL
from ..base import check, param


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class TwoTowerParams(Params):
    schema = param("schema", "feature schema: the name of a shipped schema or the path of a YAML file")
    embedding_dim = param("embedding_dim", "one embedding size for every feature (None: the schema's sizes)")
    positive_threshold = param("positive_threshold", "train events rated above this are positives")
    num_negatives = param("num_negatives", "sampled negatives per positive (losses bce and ccl)")
    alpha = param("alpha", "negatives are drawn with probability ∝ train count ** alpha")
    epochs = param("epochs", "passes over the training examples")
    batch_size = param("batch_size", "positives per optimizer step, split evenly across the processes")
    learning_rate = param("learning_rate", "Adam learning rate")
    weight_decay = param("weight_decay", "Adam L2 weight decay")
    seed = param("seed", "seed of initialisation, negative sampling and shuffling")
    backend = param("backend", "distributed training: horovod, torch_distributor or local (one process, the driver)")
    num_proc = param("num_proc", "training processes (None: one per core the cluster offers, at most 8)")
    nics = param("nics", "network interfaces for the collectives (None: ['lo'] when the driver is on loopback)")
    start_timeout = param("start_timeout", "seconds Horovod waits for all its processes to start")
    failure_timeout = param(
        "failure_timeout",
        "seconds a training process waits in a collective for a peer that stopped answering before the fit fails "
        "(Gloo timeout; a peer that dies is noticed at once)",
    )
    working_dir = param("working_dir", "where the examples are written (None: a temporary directory, removed after fit)")
    checkpoint_dir = param(
        "checkpoint_dir", "per-epoch checkpoints; a rerun resumes from them (None: working_dir/checkpoints when working_dir is set)"
    )
    shuffle_buffer = param("shuffle_buffer", "rows each process shuffles together while streaming its examples")
    exclude_seen = param("exclude_seen", "drop the user's train items from their recommendations")
    verbose = param("verbose", "print loss and samples/s per epoch (rank 0, stderr)")

    def check_shared_params(self) -> None:
        get = lambda name: self.getOrDefault(self.getParam(name))  # noqa: E731
        check(isinstance(get("schema"), str) and get("schema"), f"schema must be a name or a path, got {get('schema')!r}")
        dim = get("embedding_dim")
        check(dim is None or (is_int(dim) and dim >= 1), f"embedding_dim must be None or a positive integer, got {dim!r}")
        check(is_number(get("positive_threshold")), f"positive_threshold must be a number, got {get('positive_threshold')!r}")
        for name in ("num_negatives", "epochs", "batch_size", "shuffle_buffer", "start_timeout", "failure_timeout"):
            check(is_int(get(name)) and get(name) >= 1, f"{name} must be a positive integer, got {get(name)!r}")
        check(get("batch_size") >= 2, f"batch_size must be at least 2, got {get('batch_size')!r}")
        check(
            get("shuffle_buffer") >= get("batch_size"),
            f"shuffle_buffer ({get('shuffle_buffer')}) must hold at least one batch ({get('batch_size')})",
        )
        check(is_number(get("alpha")) and get("alpha") >= 0, f"alpha must be a number >= 0, got {get('alpha')!r}")
        check(is_number(get("learning_rate")) and get("learning_rate") > 0, f"learning_rate must be > 0, got {get('learning_rate')!r}")
        check(is_number(get("weight_decay")) and get("weight_decay") >= 0, f"weight_decay must be >= 0, got {get('weight_decay')!r}")
        check(is_int(get("seed")), f"seed must be an integer, got {get('seed')!r}")
        backend = get("backend")
        check(backend in BACKENDS, f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        num_proc = get("num_proc")
        check(num_proc is None or (is_int(num_proc) and num_proc >= 1), f"num_proc must be a positive integer, got {num_proc!r}")
        check(backend != LOCAL or num_proc in (None, 1), f"backend='local' runs one process, got num_proc={num_proc!r}")
        nics = get("nics")
        check(
            nics is None or (isinstance(nics, (list, tuple)) and nics and all(isinstance(n, str) for n in nics)),
            f"nics must be None or a list of interface names, got {nics!r}",
        )
        for name in ("working_dir", "checkpoint_dir"):
            check(get(name) is None or isinstance(get(name), str), f"{name} must be None or a path, got {get(name)!r}")
        for name in ("exclude_seen", "verbose"):
            check(isinstance(get(name), bool), f"{name} must be True or False, got {get(name)!r}")
