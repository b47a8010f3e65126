"""Every model by name: its estimator class and the parameters of its benchmark row.

The benchmark, the jobs and the command line build models only through ``build_estimator(name, …)``, so
adding a model is one module, one line here and its tests. Classes are named as ``"module:Class"`` and
imported on first use, so the optional dependencies of the two-tower models (torch, Horovod) stay optional.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pyspark.ml.param import Param

from ..errors import InvalidParameterError
from .als import SEED_PRESET as ALS_SEED_PRESET
from .base import RetrievalEstimator

@dataclass(frozen=True)
class RegisteredModel:
    """A named model: ``estimator`` is ``"module:Class"``; ``preset`` the parameters its benchmark row sets."""

    name: str
    estimator: str
    preset: Mapping[str, Any] = field(default_factory=dict)
    in_all: bool = True
    """Part of ``--models all``; presets kept only to reproduce published numbers are asked for by name."""
    family: str = ""
    """What kind of channel the row is (``item_to_item``, ``factorisation``, ``two_tower``, ``popularity``,
    ``merged``): a merged row tuned on validation takes the best row of each of its channels' families."""

    def estimator_class(self) -> type[RetrievalEstimator]:
        module, _, name = self.estimator.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def seeded(self) -> bool:
        """Whether the estimator takes a ``seed`` (a model without one is deterministic)."""
        return isinstance(getattr(self.estimator_class(), "seed", None), Param)

    @property
    def reads_side_tables(self) -> bool:
        """Whether the estimator takes ``item_features`` / ``user_features`` (the two-tower models do)."""
        return "item_features" in inspect.signature(self.estimator_class().__init__).parameters


_MODELS = "spark_retrieval.models"
FAMILY_CHANNELS = ("item_cf", "als", "dssm_bce_neg10", "global_hot")
"""The merged rows' channels: the first registered row of each family (item-to-item, matrix factorisation,
two-tower) and popularity as the fallback, fixed by registration order, not by any result. Tuned in one run with
the single rows, a merged row takes instead the best row on validation of each of these families
(``tuning.with_tuned_channels``). The quota row gives each channel an equal share until shares are tuned."""
# A row's settings (its class's defaults, then its preset) are, of the settings `spark-retrieval tune` tried on
# both ml-latest-small and ml-100k with seed 0, the best mean validation NDCG@20 (benchmarks/choose_defaults.py;
# the trial's exact values: rounding them changes a trained row). A two-tower row's epochs are its best epoch on
# ml-latest-small's validation. No test metric played a part. The merged rows keep equal weights: their tuned
# weights belong to the channels their tuning run chose.
MODELS: dict[str, RegisteredModel] = {
    entry.name: entry
    for entry in (
        RegisteredModel("global_hot", f"{_MODELS}.global_hot:GlobalHot", family="popularity"),
        RegisteredModel("item_cf", f"{_MODELS}.item_cf:ItemCF", family="item_to_item"),
        RegisteredModel("swing", f"{_MODELS}.swing:Swing", family="item_to_item"),
        RegisteredModel("als", f"{_MODELS}.als:ALS", family="factorisation"),
        RegisteredModel(
            "als_seed_preset",
            f"{_MODELS}.als:ALS",
            ALS_SEED_PRESET,
            in_all=False,
            family="factorisation",
        ),
        RegisteredModel(
            "dssm_bce_neg10",
            f"{_MODELS}.two_tower.dssm:DSSM",
            {"loss": "bce", "num_negatives": 10, "epochs": 7, "learning_rate": 0.0034430953850701418,
             "temperature": 0.03953863336724267, "verbose": False},
            family="two_tower",
        ),
        RegisteredModel(
            "dssm_bce_neg100",
            f"{_MODELS}.two_tower.dssm:DSSM",
            {"loss": "bce", "num_negatives": 100, "epochs": 11, "hidden_dims": [256, 256, 128],
             "learning_rate": 0.0010930397411189976, "temperature": 0.12270807995844037, "verbose": False},
            family="two_tower",
        ),
        RegisteredModel(
            "dssm_softmax",
            f"{_MODELS}.two_tower.dssm:DSSM",
            {"loss": "sampled_softmax", "verbose": False},
            family="two_tower",
        ),
        RegisteredModel(
            "simplex_ccl", f"{_MODELS}.two_tower.simplex:SimpleX", {"verbose": False}, family="two_tower"
        ),
        RegisteredModel(
            "multi_channel_quota",
            f"{_MODELS}.multi_channel:MultiChannel",
            {"channels": list(FAMILY_CHANNELS), "strategy": "quota"},
            family="merged",
        ),
        RegisteredModel(
            "multi_channel_rrf",
            f"{_MODELS}.multi_channel:MultiChannel",
            {"channels": list(FAMILY_CHANNELS), "strategy": "rrf"},
            family="merged",
        ),
    )
}
DEFAULT_MODELS: tuple[str, ...] = tuple(name for name, entry in MODELS.items() if entry.in_all)


def resolve_models(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` or a comma-separated list (or a list) of names → known model names, in the order given;
    ``all`` inside a list stands for every row of ``all`` (``all,multi_channel_rrf``), each name once."""
    names = [n.strip() for n in spec.split(",") if n.strip()] if isinstance(spec, str) else list(spec)
    expanded: list[str] = []
    for name in names:
        for each in DEFAULT_MODELS if name == "all" else (name,):
            if each not in expanded:
                expanded.append(each)
    unknown = [n for n in expanded if n not in MODELS]
    if unknown or not expanded:
        raise InvalidParameterError(
            f"unknown model name(s): {', '.join(unknown) or '(none given)'}; choose from: all, {', '.join(MODELS)}"
        )
    return expanded


def build_estimator(
    name: str,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    positive_threshold: float | None = None,
    verbose: bool | None = None,
    **side: Any,
) -> RetrievalEstimator:
    """The model ``name`` with its row's preset, ``seed`` (when it takes one) and then ``params`` on top.

    ``positive_threshold``: the split's, given to the models that pick their own positives from train (the
    two-tower ones) unless ``params`` sets theirs, so every row learns from the same positives.

    ``verbose``: per-epoch progress lines for the models that train in epochs (the two-tower ones) unless
    ``params`` sets it; None keeps the row's (the benchmark rows are quiet in library use).

    ``side``: ``item_features`` / ``user_features`` tables, given to the models that read them (the two-tower
    ones) and left out for the others; None values are dropped.
    """
    if name not in MODELS:
        raise InvalidParameterError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    entry = MODELS[name]
    seeded = {"seed": seed} if entry.seeded else {}
    side = {key: table for key, table in side.items() if table is not None} if entry.reads_side_tables else {}
    estimator = entry.estimator_class()(**{**entry.preset, **seeded, **dict(params or {})}, **side)
    if positive_threshold is not None and estimator.hasParam("positive_threshold") and not estimator.isSet("positive_threshold"):
        estimator._set(positive_threshold=positive_threshold)
    if verbose is not None and estimator.hasParam("verbose") and "verbose" not in (params or {}):
        estimator._set(verbose=verbose)
    return estimator
