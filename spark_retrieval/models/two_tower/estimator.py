"""The fit pipeline every two-tower estimator shares: Spark data jobs, then distributed torch training.

``fit(train)``: resolve the schema against the data (bad columns fail here, before any work), build
vocabularies and encoded examples with Spark, write them as parquet under the working directory,
train on ``num_proc`` processes through the chosen backend (rank 0 writes the trained weights to storage,
``_weights_directory``), and wrap the tables retrieval needs, the weights' among them, into a model. Nothing
that grows with users or interactions reaches the driver: vocabularies are numbered by Spark, and the weights
are read by Spark and by the embedding tasks from rank 0's file (per-example negative sampling keeps one
cumulative probability per item there, ``data/sampling.py``: 16 bytes an item). DSSM and SimpleX only add
their network, loss and parameters.

Parameters: ``TwoTowerParams`` declares the ones every family shares, with their checks (converters from
``validation``) and shared defaults; a family's Params mixin (``DSSMParams``, ``SimpleXParams``) adds its
own and its defaults, and both its estimator and its model inherit it. ``backend="auto"`` (the default),
decided at ``fit`` time: one process on a local master trains in a child process of the driver
(``process``); otherwise Horovod when it is installed, else TorchDistributor.
``model.metadata["training"]["backend"]`` records the backend that ran.

Checkpoints and failures: with ``checkpoint_dir`` (or ``working_dir``) set, rank 0 checkpoints every
epoch and a new ``fit`` with the same configuration resumes after the last completed one
(``checkpoint.py``). When a training process dies, ``fit`` raises one ``TrainingFailedError`` naming the
rank, its exit code, the epoch that was running and the checkpoint to resume from; peers that stop
answering are given up after ``failure_timeout`` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import shutil
import tempfile
import time
import uuid
from typing import Any, ClassVar, Iterator

from pyspark.ml.param import Param, Params
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType

from ...columns import ITEM_ID, TIMESTAMP, USER_ID
from ...data.context import seen_items
from ...distributed import default_nics, default_num_proc, get_launcher, local_cores
from ...distributed.processes import BACKENDS, DEFAULT_FAILURE_TIMEOUT, HOROVOD, LOCAL, PROCESS, TORCH_DISTRIBUTOR
from ...errors import EmptyDataError, InvalidParameterError, MalformedDataError, MissingDependencyError, TrainingFailedError
from ...search import Domain
from ...validation import boolean, check, integer, number, one_of, text, text_list
from ..base import RetrievalEstimator, param
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import checkpoint_path, read_checkpoint, resumable_epochs, unusable_because
from .losses import NEGATIVE_SAMPLING, PER_BATCH, PER_EXAMPLE, SAMPLED_SOFTMAX
from .model import TwoTowerModel
from .network import network_spec
from .schema import ITEM_FEATURES, USER_FEATURES, FeatureSchema, load_schema
from .training import RankResult, TrainingJob, train_on_rank
from .epoch_validation import VALIDATION_METRICS, write_validation_file
from .training_data import (
    build_feature_tables,
    item_index_counts,
    number_of_files,
    training_examples,
    write_training_files,
)

AUTO = "auto"


def resolve_backend(backend: str, local_single_process: bool = False) -> str:
    """The backend that trains. ``"auto"``: one process on a local master (``local_single_process``) is a child
    process of the driver, as fresh as Horovod's and without its start (about 14 s a fit on 2 cores); else
    Horovod when it loads (with Gloo), else TorchDistributor."""
    if backend != AUTO:
        return backend
    if local_single_process:
        return PROCESS
    from ...distributed.horovod import require_horovod

    try:
        require_horovod()
    except MissingDependencyError:
        return TORCH_DISTRIBUTOR
    return HOROVOD


class TwoTowerParams(Params):
    """Parameters every two-tower family shares, with their shared defaults; a family's mixin adds its own."""

    schema = param("schema", "feature schema: the name of a shipped schema or the path of a YAML file", text)
    embedding_dim = param(
        "embedding_dim", "one embedding size for every feature (None: the schema's sizes)", integer(at_least=1)
    )
    positive_threshold = param("positive_threshold", "train events rated above this are positives", number())
    num_negatives = param("num_negatives", "sampled negatives per positive (losses bce and ccl)", integer(at_least=1))
    alpha = param("alpha", "negatives are drawn with probability ∝ train count ** alpha", number(at_least=0))
    negative_sampling = param(
        "negative_sampling",
        "losses bce and ccl: per_example (each positive draws its own negatives, none of them the user's positives, "
        "once before training) or per_batch (each step draws num_negatives items shared by the whole batch; a "
        "row's own positive among them is left out of that row's loss)",
        one_of(*NEGATIVE_SAMPLING),
    )
    epochs = param("epochs", "passes over the training examples (with validation queries: at most)", integer(at_least=1))
    batch_size = param(
        "batch_size", "positives per optimizer step, split evenly across the processes", integer(at_least=2)
    )
    learning_rate = param("learning_rate", "Adam learning rate", number(above=0))
    weight_decay = param("weight_decay", "Adam L2 weight decay", number(at_least=0))
    seed = param("seed", "seed of initialisation, negative sampling and shuffling", integer())
    backend = param(
        "backend",
        "distributed training: auto (one process on a local master: process; else horovod when installed, else "
        "torch_distributor), horovod, torch_distributor, process (one child process of the driver) or local (the driver)",
        one_of(AUTO, *BACKENDS),
    )
    num_proc = param(
        "num_proc",
        "training processes (None: 1 on a local master, using all its cores; on a cluster one per core it offers, at most 8)",
        integer(at_least=1),
    )
    nics = param(
        "nics", "network interfaces for the collectives (None: ['lo'] when the driver is on loopback)", text_list
    )
    start_timeout = param("start_timeout", "seconds Horovod waits for all its processes to start", integer(at_least=1))
    failure_timeout = param(
        "failure_timeout",
        "seconds a training process waits in a collective for a peer that stopped answering before the fit fails "
        "(Gloo timeout; a peer that dies is noticed at once)",
        integer(at_least=1),
    )
    working_dir = param(
        "working_dir", "where the examples are written (None: a temporary directory, removed after fit)", text
    )
    checkpoint_dir = param(
        "checkpoint_dir",
        "per-epoch checkpoints; a rerun resumes from them (None: working_dir/checkpoints when working_dir is set)",
        text,
    )
    shuffle_buffer = param(
        "shuffle_buffer", "rows each process shuffles together while streaming its examples", integer(at_least=1)
    )
    exclude_seen = param("exclude_seen", "drop the user's train items from their recommendations", boolean)
    verbose = param("verbose", "print loss and samples/s per epoch (rank 0, stderr)", boolean)
    patience = param(
        "patience",
        "with validation queries: stop after this many epochs without a better validation score (the best epoch's "
        "weights are kept)",
        integer(at_least=1),
    )
    validation_metric = param("validation_metric", "with validation queries: ndcg or recall", one_of(*VALIDATION_METRICS))
    validation_k = param("validation_k", "with validation queries: the metric's cut-off K", integer(at_least=1))

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {}
    """What every two-tower family tunes; a family's mixin adds its own (``spark_retrieval.search``). The number
    of epochs is not searched: a tuning fit is given the validation queries and keeps its best epoch."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._set_defaults(
            embedding_dim=None,
            positive_threshold=2.0,
            alpha=0.75,
            negative_sampling=PER_EXAMPLE,
            batch_size=512,
            learning_rate=3e-3,
            weight_decay=0.0,
            seed=0,
            backend=AUTO,
            num_proc=None,
            nics=None,
            start_timeout=600,
            failure_timeout=DEFAULT_FAILURE_TIMEOUT,
            working_dir=None,
            checkpoint_dir=None,
            shuffle_buffer=65536,
            exclude_seen=True,
            verbose=True,
            patience=3,
            validation_metric="ndcg",
            validation_k=20,
        )

    def _set_defaults(self, **defaults: Any) -> None:
        """``_setDefault`` of the Params this class declares: a model's ``schema`` is its resolved
        ``FeatureSchema`` (a property), not the Param."""
        self._setDefault(**{k: v for k, v in defaults.items() if isinstance(getattr(type(self), k, None), Param)})


class TwoTowerEstimator(RetrievalEstimator, TwoTowerParams):
    """Base of DSSM and SimpleX: ``Family(*, item_features=None, user_features=None, validation_queries=None,
    **params)``.

    Only the parameters given are set (the others keep the family's defaults). Subclasses name their
    family and model class and inherit their family's Params mixin. ``item_features`` (``item_id`` + item columns, e.g. ``genres``) and ``user_features`` (``user_id`` +
    user columns, e.g. ``gender, age, occupation``) are optional side tables given at construction;
    the schema's optional features that read a table not given are left out.

    ``validation_queries`` (a split's ``test`` shape: ``query_id, user_id``, the context columns and one row per
    label ``item_id``): scored after every epoch with ``validation_metric``@``validation_k``; ``epochs`` is then a
    maximum, training stops after ``patience`` epochs without a better score and the model keeps the best epoch's
    weights (``metadata["training"]["best_epoch"]``). Give validation queries carved from the data you fit on
    (``data.split.validation_split``), never the test queries.
    """

    required_columns = (USER_ID, ITEM_ID, TIMESTAMP)
    family: ClassVar[str]
    model_class: ClassVar[type[TwoTowerModel]]

    def __init__(
        self,
        *,
        item_features: DataFrame | None = None,
        user_features: DataFrame | None = None,
        validation_queries: DataFrame | None = None,
        **params: Any,
    ):
        tables = (("item_features", item_features), ("user_features", user_features), ("validation_queries", validation_queries))
        for name, table in tables:
            if table is not None and not isinstance(table, DataFrame):
                raise InvalidParameterError(
                    f"{type(self).__name__}: {name} must be a Spark DataFrame or None, got {type(table).__name__}"
                )
        self.item_features = item_features
        self.user_features = user_features
        self.validation_queries = validation_queries
        super().__init__(**params)

    # -- what a family defines ---------------------------------------------------------------------
    def loss_name(self) -> str:
        raise NotImplementedError

    def network_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def objective_options(self) -> dict[str, float]:
        raise NotImplementedError

    def check_family_params(self, schema: FeatureSchema) -> None:
        """Raise ``InvalidParameterError`` for family parameter combinations (and schema shapes) the family cannot use."""

    # -- shared ------------------------------------------------------------------------------------
    def negative_sampling_used(self) -> str | None:
        """How the loss gets its sampled negatives; None for the sampled softmax (in-batch positives)."""
        return None if self.loss_name() == SAMPLED_SOFTMAX else self.get("negative_sampling")

    def validate_params(self) -> None:
        """The checks across parameters (each one alone is checked by its converter)."""
        name = type(self).__name__
        batch_size, shuffle_buffer = self.get("batch_size"), self.get("shuffle_buffer")
        check(
            shuffle_buffer >= batch_size,
            f"{name}: shuffle_buffer ({shuffle_buffer}) must hold at least one batch ({batch_size})",
        )
        num_proc = self.get("num_proc")
        check(
            self.get("backend") not in (LOCAL, PROCESS) or num_proc in (None, 1),
            f"{name}: backend={self.get('backend')!r} runs one process, got num_proc={num_proc!r}",
        )
        self.check_family_params(self.feature_schema())

    def feature_schema(self) -> FeatureSchema:
        schema = load_schema(self.get("schema"))
        dim = self.get("embedding_dim")
        return schema.with_embedding_dim(dim) if dim is not None else schema

    def resolved_schema(self, train: DataFrame) -> FeatureSchema:
        """The schema fitted to the given tables; a column the data lacks, or a list feature whose column is
        not an array, raises ``MalformedDataError`` here."""
        schema = self.feature_schema().resolve(
            train.columns,
            self.user_features.columns if self.user_features is not None else None,
            self.item_features.columns if self.item_features is not None else None,
        )
        tables = {USER_FEATURES: self.user_features, ITEM_FEATURES: self.item_features}
        for feature in schema.features:
            table = tables.get(feature.source)
            if table is None or not feature.is_list:
                continue
            kind = table.schema[feature.name].dataType
            if not isinstance(kind, ArrayType):
                raise MalformedDataError(
                    f"{feature.source} column {feature.name!r} is {kind.simpleString()}, but the schema's "
                    f"{feature.kind} feature {feature.name!r} needs an array column (e.g. split the text with "
                    "pyspark.sql.functions.split, or store the table as parquet/JSON with a list)"
                )
        return schema

    def _fit_interactions(self, train: DataFrame) -> TwoTowerModel:
        started = time.perf_counter()
        spark = train.sparkSession
        schema = self.resolved_schema(train)
        self.check_family_params(schema)
        backend = self.get("backend")
        num_proc = self.get("num_proc") or (1 if backend in (LOCAL, PROCESS) else default_num_proc(spark))
        backend = resolve_backend(backend, num_proc == 1 and local_cores(spark) is not None)
        nics = self.get("nics") or default_nics(spark)
        launcher = get_launcher(
            backend, spark, num_proc, nics, self.get("start_timeout"), self.get("failure_timeout")
        )
        if self.loss_name() == SAMPLED_SOFTMAX and self.get("batch_size") < 2 * num_proc:
            raise InvalidParameterError(
                f"batch_size={self.get('batch_size')} leaves fewer than 2 in-batch items per process ({num_proc} processes)"
            )

        tables = build_feature_tables(train, schema, self.user_features, self.item_features)
        spec = network_spec(self.family, schema, tables.sizes, **self.network_options())
        sampling = self.negative_sampling_used()
        per_example = self.get("num_negatives") if sampling == PER_EXAMPLE else None
        examples, positives = training_examples(
            train, tables, self.get("positive_threshold"), per_example, self.get("alpha"), self.get("seed")
        )
        sampling_counts = None
        if sampling == PER_BATCH:
            item_id = next(f for f in schema.item if f.name == ITEM_ID)
            sampling_counts = item_index_counts(train, tables.vocabularies[item_id.vocabulary])
        weights_dir = _weights_directory(self.get("working_dir"))
        try:
            positive_count = positives.count()
            with _working_directory(self.get("working_dir")) as directory:
                files, items_path = write_training_files(
                    examples, positives, tables.items, schema, directory, number_of_files(positive_count, num_proc),
                    sampling_counts, self.get("alpha"),
                )
                example_count = sum(rows for _, rows in files)
                if example_count < num_proc:
                    raise EmptyDataError(f"only {example_count} training example(s) for {num_proc} processes")
                validation = None
                if self.validation_queries is not None:
                    seen = train if self.get("exclude_seen") else None
                    validation = write_validation_file(self.validation_queries, seen, tables, directory)
                job = self._training_job(
                    spec, files, items_path, example_count, backend, nics, directory, validation, weights_dir
                )
                resumable_epochs(job.checkpoint_dir, job.fingerprint, job.epochs)  # warns about an unusable one
                launched = time.perf_counter()
                try:
                    results = launcher.run(train_on_rank, job)
                except TrainingFailedError as failure:
                    raise _with_progress(failure, job) from failure
                trained = time.perf_counter()
        except BaseException:
            if not self.get("working_dir"):
                shutil.rmtree(weights_dir, ignore_errors=True)
            raise
        finally:
            positives.unpersist()
        root = _root_result(results)
        training = {
            "backend": backend,
            "num_proc": num_proc,
            "positives": positive_count,
            "examples": example_count,
            "resumed_from_epoch": root.start_epoch if root.start_epoch else None,
            "history": root.history,
            # Horovod returns every rank's own hash; TorchDistributor only rank 0's gathered list.
            "parameter_hashes": [r.parameter_hash for r in results] if len(results) > 1 else root.parameter_hashes,
            "environment": {**root.environment, "pyspark": spark.version},
            "seconds": fit_phases(launched - started, trained - launched, root.history[root.start_epoch:]),
        }
        if validation is not None:
            training["best_epoch"] = root.best_epoch
            training["validation"] = {
                "metric": self.get("validation_metric"), "k": self.get("validation_k"),
                "patience": self.get("patience"), "queries": validation[1],
            }
        return self._model(train, tables, spec, root.state_path, training)

    def _model(self, train: DataFrame, tables, spec, state_path: str, training: dict[str, Any]) -> TwoTowerModel:
        model_tables = {f"{TwoTowerModel.VOCABULARY_PREFIX}{n}": v for n, v in tables.vocabularies.items()}
        model_tables[TwoTowerModel.ITEMS] = tables.items
        model_tables[TwoTowerModel.SEEN] = seen_items(train)
        model_tables[TwoTowerModel.STATE] = train.sparkSession.read.parquet(state_path)
        if tables.users is not None:
            model_tables[TwoTowerModel.USERS] = tables.users
        model = self.model_class(tables=model_tables, metadata={"network": spec, "training": training})
        model._cache["feature_tables"] = tables  # the vocabularies are already built and persisted: reuse them
        return model

    def _training_job(
        self, spec, files, items_path, example_count, backend, nics, directory, validation=None, weights_dir=None
    ) -> TrainingJob:
        checkpoint_dir = self.get("checkpoint_dir") or (f"{directory}/checkpoints" if self.get("working_dir") else None)
        settings = {
            "checkpoint_format": CHECKPOINT_FORMAT,
            "network": spec,
            "loss": self.loss_name(),
            "objective": self.objective_options(),
            "examples": example_count,
            "example_files": [rows for _, rows in files],
            **{name: self.get(name) for name in (
                "batch_size", "learning_rate", "weight_decay", "seed", "num_negatives", "alpha", "positive_threshold",
                "negative_sampling",
            )},
        }
        validation_settings = {}
        if validation is not None:
            validation_settings = {
                "validation_path": validation[0],
                "validation_metric": self.get("validation_metric"),
                "validation_k": self.get("validation_k"),
                "patience": self.get("patience"),
            }
            settings["validation"] = {**validation_settings, "queries": validation[1], "validation_path": None}
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        return TrainingJob(
            network=spec,
            loss=self.loss_name(),
            example_files=files,
            items_path=items_path,
            batch_size=self.get("batch_size"),
            epochs=self.get("epochs"),
            learning_rate=float(self.get("learning_rate")),
            weight_decay=float(self.get("weight_decay")),
            seed=self.get("seed"),
            fingerprint=fingerprint,
            backend=backend,
            shuffle_buffer=self.get("shuffle_buffer"),
            negative_sampling=self.negative_sampling_used() or PER_EXAMPLE,
            num_negatives=self.get("num_negatives"),
            checkpoint_dir=checkpoint_dir,
            state_dir=weights_dir,
            nics=nics,
            failure_timeout=self.get("failure_timeout"),
            verbose=self.get("verbose"),
            label=self.family,
            **validation_settings,
            **self.objective_options(),
        )


def _with_progress(failure: TrainingFailedError, job: TrainingJob) -> TrainingFailedError:
    """``failure`` restated with the epoch that was running and the checkpoint to resume from."""
    done = None
    if job.checkpoint_dir:
        try:
            checkpoint = read_checkpoint(job.checkpoint_dir)
        except Exception:  # noqa: BLE001 - a torn or foreign file only means "nothing to resume"
            checkpoint = None
        usable = checkpoint is not None and unusable_because(checkpoint, job.fingerprint, job.epochs) is None
        done = int(checkpoint["epochs_done"]) if usable else 0
    if done is None:
        epoch, where = None, "during training"
        resume = "no checkpoint_dir (or working_dir) was set, so fitting again starts from the first epoch"
        path = None
    else:
        path = checkpoint_path(job.checkpoint_dir)
        epoch = done + 1 if done < job.epochs else None
        where = f"during epoch {epoch}/{job.epochs}" if epoch else f"after its last epoch ({job.epochs})"
        resume = (
            f"the last completed epoch ({done}) is checkpointed in {path}: fit again with the same checkpoint_dir "
            f"and parameters to resume from epoch {min(done + 1, job.epochs)}"
            if done
            else f"no epoch had completed, so fitting again starts from the first one ({path} does not hold one)"
        )
    return TrainingFailedError(
        f"{job.label} training failed {where}: {failure}. {resume[0].upper()}{resume[1:]}.",
        rank=failure.rank,
        exit_code=failure.exit_code,
        epoch=epoch,
        checkpoint=path if done else None,
    )


def fit_phases(data_seconds: float, launch_seconds: float, epochs: list[dict[str, float]]) -> dict[str, float]:
    """Where a fit's time went: the Spark jobs that build and write the training data, the epochs (this run's),
    their validation, and the rest of the launch (processes and collectives starting, data and weights loaded,
    the weights returned)."""
    epoch_seconds = sum(record["seconds"] for record in epochs)
    validation_seconds = sum(record.get("validation_seconds", 0.0) for record in epochs)
    return {
        "training_data": data_seconds,
        "epochs": epoch_seconds,
        "validation": validation_seconds,
        "start_and_finish": max(0.0, launch_seconds - epoch_seconds - validation_seconds),
    }


def _root_result(results: list[RankResult]) -> RankResult:
    root = next((r for r in results if r is not None and r.rank == 0), None)
    if root is None or root.state_path is None:
        raise RuntimeError("distributed training returned no result from rank 0")
    own = {r.parameter_hash for r in results if r is not None}
    if len(set(root.parameter_hashes) | own) != 1:
        raise RuntimeError(f"training processes ended with different parameters: {root.parameter_hashes}")
    return root


def _weights_directory(working_dir: str | None) -> str:
    """Where rank 0 writes the trained weights: a folder of its own under ``working_dir`` (kept, like the
    examples), else a temporary folder removed when this Python process exits. Not sooner: a query plan built
    from the model (``model.recommend(...)``, lazily evaluated) reads the files after the model object is gone."""
    if working_dir:
        return f"{working_dir.rstrip('/')}/weights/{uuid.uuid4().hex}"
    directory = tempfile.mkdtemp(prefix="two-tower-weights-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


@contextlib.contextmanager
def _working_directory(path: str | None) -> Iterator[str]:
    if path:
        yield path.rstrip("/")
        return
    directory = tempfile.mkdtemp(prefix="two-tower-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)

