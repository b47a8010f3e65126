"""The fit pipeline every two-tower estimator shares: Spark data jobs, then distributed torch training.

``fit(train)``: resolve the schema against the data (bad columns fail here, before any work), build
vocabularies and encoded examples with Spark, write them as parquet under the working directory,
train on ``num_proc`` processes through the chosen backend, and wrap the weights and the tables
retrieval needs into a model. DSSM and SimpleX only add their network, loss and parameters.

Checkpoints and failures: with ``checkpoint_dir`` (or ``working_dir``) set, rank 0 checkpoints every
epoch and a new ``fit`` with the same configuration resumes after the last completed one
(``checkpoint.py``). When a training process dies, ``fit`` raises one ``TrainingFailedError`` naming the
rank, its exit code, the epoch that was running and the checkpoint to resume from; peers that stop
answering are given up after ``failure_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from typing import Any, ClassVar, Iterator

from pyspark.sql import DataFrame

from ...columns import ITEM_ID, TIMESTAMP, USER_ID
from ...distributed import LOCAL, default_nics, default_num_proc, get_launcher
from ...errors import EmptyDataError, InvalidParameterError, TrainingFailedError
from ..base import RetrievalEstimator
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import checkpoint_path, read_checkpoint, resumable_epochs, unusable_because
from .losses import SAMPLED_SOFTMAX
from .model import TwoTowerModel
from .network import network_spec
from .params import TwoTowerParams
from .schema import FeatureSchema, load_schema
from .state import state_table
from .training import RankResult, TrainingJob, train_on_rank
from .training_data import (
    build_feature_tables,
    number_of_files,
    seen_items,
    training_examples,
    write_training_files,
)


class TwoTowerEstimator(RetrievalEstimator, TwoTowerParams):
    """Base of DSSM and SimpleX. Subclasses name their family and model class and add their own params.

    ``item_features`` (``item_id`` + item columns, e.g. ``genres``) and ``user_features`` (``user_id`` +
    user columns, e.g. ``gender, age, occupation``) are optional side tables given at construction;
    the schema's optional features that read a table not given are left out.
    """

    required_columns = (USER_ID, ITEM_ID, TIMESTAMP)
    family: ClassVar[str]
    model_class: ClassVar[type[TwoTowerModel]]

    def _init_two_tower(self, arguments: dict[str, Any]) -> None:
        """Every family's ``__init__`` ends with ``self._init_two_tower(locals())``: its keyword arguments
        become the Params' defaults, the side tables are kept, and the parameters are checked."""
        skip = ("self", "__class__", "item_features", "user_features")
        # Tuples (hidden_dims, nics) become lists: the values a saved model's JSON gives back.
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items() if k not in skip}
        item_features, user_features = arguments.get("item_features"), arguments.get("user_features")
        self._init_params(params, {})
        for name, table in (("item_features", item_features), ("user_features", user_features)):
            if table is not None and not isinstance(table, DataFrame):
                raise InvalidParameterError(f"{name} must be a Spark DataFrame or None, got {type(table).__name__}")
        self.item_features = item_features
        self.user_features = user_features
        self.validate_params()

    # -- what a family defines ---------------------------------------------------------------------
    def loss_name(self) -> str:
        raise NotImplementedError

    def network_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def objective_options(self) -> dict[str, float]:
        raise NotImplementedError

    def check_family_params(self, schema: FeatureSchema) -> None:
        """Raise ``InvalidParameterError`` for family parameters (and schema shapes) the family cannot use."""

    # -- shared ------------------------------------------------------------------------------------
    def validate_params(self) -> None:
        self.check_shared_params()
        self.check_family_params(self.feature_schema())

    def feature_schema(self) -> FeatureSchema:
        schema = load_schema(self.get("schema"))
        dim = self.get("embedding_dim")
        return schema.with_embedding_dim(dim) if dim is not None else schema

    def resolved_schema(self, train: DataFrame) -> FeatureSchema:
        """The schema fitted to the given tables; a column the data lacks raises ``MalformedDataError`` here."""
        return self.feature_schema().resolve(
            train.columns,
            self.user_features.columns if self.user_features is not None else None,
            self.item_features.columns if self.item_features is not None else None,
        )

    def _fit_interactions(self, train: DataFrame) -> TwoTowerModel:
        spark = train.sparkSession
        schema = self.resolved_schema(train)
        self.check_family_params(schema)
        backend = self.get("backend")
        num_proc = self.get("num_proc") or (1 if backend == LOCAL else default_num_proc(spark))
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
        num_negatives = None if self.loss_name() == SAMPLED_SOFTMAX else self.get("num_negatives")
        examples, positives = training_examples(
            train, tables, self.get("positive_threshold"), num_negatives, self.get("alpha"), self.get("seed")
        )
        try:
            positive_count = positives.count()
            with _working_directory(self.get("working_dir")) as directory:
                files, items_path = write_training_files(
                    examples, positives, tables.items, schema, directory, number_of_files(positive_count, num_proc)
                )
                example_count = sum(rows for _, rows in files)
                if example_count < num_proc:
                    raise EmptyDataError(f"only {example_count} training example(s) for {num_proc} processes")
                job = self._training_job(spec, files, items_path, example_count, backend, nics, directory)
                resumable_epochs(job.checkpoint_dir, job.fingerprint, job.epochs)  # warns about an unusable one
                try:
                    results = launcher.run(train_on_rank, job)
                except TrainingFailedError as failure:
                    raise _with_progress(failure, job) from failure
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
        }
        return self._model(train, tables, spec, root.state, training)

    def _model(self, train: DataFrame, tables, spec, state: bytes, training: dict[str, Any]) -> TwoTowerModel:
        model_tables = {f"{TwoTowerModel.VOCABULARY_PREFIX}{n}": v for n, v in tables.vocabularies.items()}
        model_tables[TwoTowerModel.ITEMS] = tables.items
        model_tables[TwoTowerModel.SEEN] = seen_items(train)
        model_tables[TwoTowerModel.STATE] = state_table(train.sparkSession, state)
        if tables.users is not None:
            model_tables[TwoTowerModel.USERS] = tables.users
        model = self.model_class(tables=model_tables, metadata={"network": spec, "training": training})
        model._cache["feature_tables"] = tables  # the vocabularies are already broadcast: reuse them
        return model

    def _training_job(self, spec, files, items_path, example_count, backend, nics, directory) -> TrainingJob:
        checkpoint_dir = self.get("checkpoint_dir") or (f"{directory}/checkpoints" if self.get("working_dir") else None)
        settings = {
            "checkpoint_format": CHECKPOINT_FORMAT,
            "network": spec,
            "loss": self.loss_name(),
            "objective": self.objective_options(),
            "examples": example_count,
            "example_files": [rows for _, rows in files],
            **{name: self.get(name) for name in (
                "batch_size", "learning_rate", "weight_decay", "seed", "num_negatives", "alpha", "positive_threshold"
            )},
        }
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
            checkpoint_dir=checkpoint_dir,
            nics=nics,
            failure_timeout=self.get("failure_timeout"),
            verbose=self.get("verbose"),
            label=self.family,
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


def _root_result(results: list[RankResult]) -> RankResult:
    root = next((r for r in results if r is not None and r.rank == 0), None)
    if root is None or root.state is None:
        raise RuntimeError("distributed training returned no result from rank 0")
    own = {r.parameter_hash for r in results if r is not None}
    if len(set(root.parameter_hashes) | own) != 1:
        raise RuntimeError(f"training processes ended with different parameters: {root.parameter_hashes}")
    return root


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

