"""The fit pipeline every two-tower estimator shares: Spark data jobs, then distributed torch training.

``fit(train)``: resolve the schema against the data (bad columns fail here, before any work), build
vocabularies and encoded examples with Spark, write them as parquet under the working directory,
train on ``num_proc`` processes through the chosen backend, and wrap the weights and the tables
retrieval needs into a model.
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
from ...errors import EmptyDataError, InvalidParameterError
from ..base import RetrievalEstimator
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

    def _init_two_tower(self, params: dict[str, Any], item_features, user_features) -> None:
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
        launcher = get_launcher(backend, spark, num_proc, nics, self.get("start_timeout"))
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
                results = launcher.run(train_on_rank, job)
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
            "network": spec,
            "loss": self.loss_name(),
            "objective": self.objective_options(),
            "examples": example_count,
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
            verbose=self.get("verbose"),
            label=self.family,
            **self.objective_options(),
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

