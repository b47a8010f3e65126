"""Multi-channel retrieval: several registered models (channels) fitted on the same train, their lists merged.

``MultiChannel(channels=["item_cf", "als", "simplex_ccl", "global_hot"], strategy="rrf")`` fits each channel
as its registry row (``registry.build_estimator``) and recommends by merging the channels' lists with
``retrieval.merge`` (quota, reciprocal rank fusion or round robin). Already fitted models are merged with
``MultiChannelModel.from_models({...})``. A saved multi-channel model holds each channel's saved model under
``channels/<name>``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, ClassVar, Mapping

from pyspark import StorageLevel
from pyspark.ml.param import Params
from pyspark.sql import DataFrame

from ..errors import DataNotFoundError, InvalidParameterError, MalformedDataError
from ..retrieval.merge import DEFAULT_RRF_K, STRATEGIES, check_channels, merge_lists, quotas_from_shares
from ..search import Domain, Each, FloatRange
from ..validation import check, integer, integer_list, mapping, number, number_list, one_of, text_list
from .base import RetrievalEstimator, RetrievalModel, param

CHANNELS_FOLDER = "channels"


class MultiChannelParams(Params):
    """Params shared by :class:`MultiChannel` and :class:`MultiChannelModel`."""

    channels = param("channels", "registered model names, merged in this order (quota and round robin follow it)", text_list)
    strategy = param("strategy", f"how lists are merged: {', '.join(STRATEGIES)}", one_of(*STRATEGIES))
    quotas = param("quotas", "quota: slots per channel, summing to k", integer_list(at_least=0))
    shares = param(
        "shares", "quota: slots per channel as shares of k (largest remainder); neither this nor quotas: equal shares",
        number_list(at_least=0),
    )
    weights = param("weights", "rrf: weight per channel (>= 0); None weighs every channel 1", number_list(at_least=0))
    rrf_k = param("rrf_k", "rrf: the constant added to every rank", number(above=0))
    depth = param("depth", "candidates taken from each channel's list; None takes k", integer(at_least=1))
    channel_params = param("channel_params", "per channel, parameters set on top of its registry row", mapping)
    positive_threshold = param(
        "positive_threshold", "given to the channels that pick their positives from train; None keeps theirs", number()
    )
    seed = param("seed", "the seed every seeded channel is fitted with", integer())

    SEARCH_SPACE: ClassVar[dict[str, Domain]] = {
        "shares": Each(FloatRange(0.0, 1.0), of="channels", when={"strategy": "quota"}, unset=1.0),
        "weights": Each(FloatRange(0.0, 1.0), of="channels", when={"strategy": "rrf"}, unset=1.0),
        "rrf_k": FloatRange(1.0, 200.0, log=True, when={"strategy": "rrf"}),
    }
    """What ``spark-retrieval tune`` searches for a merged row: its merge only (the channels keep their own
    parameters, tuned as their own rows); every trial reuses the channels' fits and lists."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._setDefault(
            strategy="rrf",
            quotas=None,
            shares=None,
            weights=None,
            rrf_k=DEFAULT_RRF_K,
            depth=None,
            channel_params={},
            positive_threshold=None,
            seed=0,
        )

    def require_channels(self) -> None:
        check(self.isDefined(self.getParam("channels")), f"{type(self).__name__}: channels must be set (registered model names)")

    def validate_merge(self) -> None:
        """Check the merge settings against each other and the channels (once ``channels`` is set)."""
        if not self.isDefined(self.getParam("channels")):
            return
        channels = self.get("channels")
        quotas, shares = self.get("quotas"), self.get("shares")
        check(quotas is None or shares is None, f"{type(self).__name__}: set quotas or shares, not both")
        check_channels(channels, self.get("weights"), self.get("rrf_k"), {"quotas": quotas, "shares": shares})
        unknown = sorted(set(self.get("channel_params")) - set(channels))
        check(not unknown, f"{type(self).__name__}: channel_params names channels not merged: {', '.join(unknown)}")
        if shares is not None:
            quotas_from_shares(shares, 1)  # shares all zero fail here, where they are given

    def quotas_for(self, k: int) -> list[int] | None:
        """The quota strategy's slots at ``k``: ``quotas``, else ``shares`` of ``k``, else equal shares."""
        if self.get("quotas") is not None:
            return self.get("quotas")
        if self.get("strategy") != "quota":
            return None
        return quotas_from_shares(self.get("shares") or [1.0] * len(self.get("channels")), k)


class MultiChannel(RetrievalEstimator, MultiChannelParams):
    """Fit every channel on the same train; ``fit(train)`` returns a :class:`MultiChannelModel`.

    ``item_features`` / ``user_features`` go to the channels that read side tables (the two-tower ones).
    """

    def __init__(self, *, item_features: DataFrame | None = None, user_features: DataFrame | None = None, **params: Any):
        self.item_features = item_features
        self.user_features = user_features
        super().__init__(**params)

    def validate_params(self) -> None:
        from .registry import MODELS

        self.validate_merge()
        for name in self.get("channels") if self.isDefined(self.getParam("channels")) else []:
            entry = MODELS.get(name)
            if entry is None:
                raise InvalidParameterError(f"MultiChannel: unknown channel {name!r}; choose from: {', '.join(MODELS)}")
            if entry.estimator_class() is MultiChannel:
                raise InvalidParameterError(f"MultiChannel: channel {name!r} is itself a multi-channel row")

    def channel_estimators(self) -> dict[str, RetrievalEstimator]:
        """Each channel's estimator: its registry row with ``seed``, ``positive_threshold`` and ``channel_params``."""
        from .registry import build_estimator

        self.require_channels()
        return {
            name: build_estimator(
                name,
                self.get("seed"),
                self.get("channel_params").get(name),
                self.get("positive_threshold"),
                item_features=self.item_features,
                user_features=self.user_features,
            )
            for name in self.get("channels")
        }

    def _fit_interactions(self, train: DataFrame) -> "MultiChannelModel":
        return MultiChannelModel(
            channel_models={name: estimator.fit(train) for name, estimator in self.channel_estimators().items()}
        )


class MultiChannelModel(RetrievalModel, MultiChannelParams):
    """The channels' fitted models; ``recommend`` merges their lists (``query_id, recommendations, provenance``)."""

    def __init__(
        self,
        tables: dict[str, DataFrame] | None = None,
        metadata: dict[str, Any] | None = None,
        channel_models: Mapping[str, RetrievalModel] | None = None,
    ):
        super().__init__(tables, metadata)
        self.channel_models: dict[str, RetrievalModel] = dict(channel_models or {})

    @classmethod
    def from_models(cls, channel_models: Mapping[str, RetrievalModel], **params: Any) -> "MultiChannelModel":
        """Merge already fitted models, named by the mapping's keys (its order is the channel order)."""
        model = cls(channel_models=channel_models)
        model._set(channels=list(channel_models), **params)
        model.validate_merge()
        return model

    def query_columns(self) -> tuple[str, ...]:
        columns: list[str] = []
        for model in self.channel_models.values():
            columns += [c for c in model.query_columns() if c not in columns]
        return tuple(columns)

    def channel_lists(self, queries: DataFrame, k: int) -> dict[str, DataFrame]:
        """Each channel's list for ``queries``, ``depth`` (default ``k``) items long, in channel order."""
        depth = self.get("depth") or k
        return {name: self.channel_models[name].recommend(queries, depth) for name in self.get("channels")}

    def merge(self, lists: Mapping[str, DataFrame], k: int) -> DataFrame:
        """Merge lists already computed (one per channel, by name) with this model's settings."""
        return merge_lists(
            {name: lists[name] for name in self.get("channels")},
            k,
            self.get("strategy"),
            quotas=self.quotas_for(k),
            weights=self.get("weights"),
            rrf_k=self.get("rrf_k"),
            depth=self.get("depth") or k,
        )

    def _recommend(self, queries: DataFrame, k: int) -> DataFrame:
        self.require_channels()
        self.validate_merge()
        return self.merge(self.channel_lists(queries, k), k)

    def materialize(self) -> "MultiChannelModel":
        for model in self.channel_models.values():
            model.materialize()
        return self

    def unpersist(self) -> None:
        for model in self.channel_models.values():
            model.unpersist()

    def _save_parts(self, folder: str) -> None:
        for name, model in self.channel_models.items():
            model.save(f"{folder}/{CHANNELS_FOLDER}/{name}")

    def _load_parts(self, path: str) -> None:
        for name in self.get("channels"):
            try:
                self.channel_models[name] = RetrievalModel.load(f"{path}/{CHANNELS_FOLDER}/{name}")
            except DataNotFoundError:
                raise MalformedDataError(f"corrupt saved model at {path}: channel {name!r} is missing") from None


MERGE_PARAMS = ("strategy", "quotas", "shares", "weights", "rrf_k", "depth")
"""The MultiChannel parameters that say how lists are merged; the others say how the channels are fitted."""


NOT_FITTED = ("verbose",)


class ChannelCache:
    """Channel fits and their lists, keyed by (channel, parameters): merged models that differ only in how they
    merge (the rows of one benchmark, the trials of one tuning study) fit each channel once and recommend once.

    Everything kept is persisted until ``release``; the driver holds one fitted model object per key.
    """

    def __init__(self, train: DataFrame, progress: Callable[[str], None] = lambda line: None):
        self.train = train
        self.progress = progress
        self.fits: dict[tuple[str, str], tuple[RetrievalModel, float]] = {}
        self.cached_lists: dict[tuple[str, str, int, int], DataFrame] = {}

    @staticmethod
    def key(channel: str, estimator: RetrievalEstimator) -> tuple[str, str]:
        """The channel and its parameters, less those that change what is printed, not what is fitted."""
        params = {name: value for name, value in estimator.params_dict().items() if name not in NOT_FITTED}
        return channel, json.dumps(params, sort_keys=True, default=str)

    def offer(self, channel: str, estimator: RetrievalEstimator, model: RetrievalModel, fit_seconds: float) -> None:
        """Keep a fit made elsewhere (a benchmark's single row) for the merged models that want it."""
        self.fits.setdefault(self.key(channel, estimator), (model, fit_seconds))

    def holds(self, model: RetrievalModel) -> bool:
        return any(model is kept for kept, _ in self.fits.values())

    def merged_model(self, estimator: MultiChannel) -> tuple[MultiChannelModel, float]:
        """``estimator``'s model over cached channel fits (fitting the missing ones) and the sum of their fit times."""
        models, seconds = {}, 0.0
        for channel, channel_estimator in estimator.channel_estimators().items():
            key = self.key(channel, channel_estimator)
            if key not in self.fits:
                self.progress(f"fitting channel {channel}")
                started = time.perf_counter()
                model = channel_estimator.fit(self.train)
                model.materialize()
                self.fits[key] = (model, time.perf_counter() - started)
            models[channel], fit_seconds = self.fits[key]
            seconds += fit_seconds
        merge = {name: value for name, value in estimator.params_dict().items() if name in MERGE_PARAMS}
        return MultiChannelModel.from_models(models, **merge), seconds

    def offer_list(self, model: RetrievalModel, queries: DataFrame, depth: int, frame: DataFrame) -> bool:
        """Keep a kept fit's list made elsewhere (a benchmark's single row), persisted; False when the fit is not kept."""
        fit = next((key for key, (kept, _) in self.fits.items() if kept is model), None)
        if fit is None:
            return False
        self.cached_lists.setdefault((*fit, id(queries), depth), frame.persist(StorageLevel.MEMORY_AND_DISK))
        return True

    def holds_list(self, frame: DataFrame) -> bool:
        return any(frame is kept for kept in self.cached_lists.values())

    def lists(self, model: MultiChannelModel, queries: DataFrame, k: int) -> dict[str, DataFrame]:
        """Each channel's list for ``queries`` (``depth``, or ``k``, long), computed once per fit, queries and depth."""
        depth = model.get("depth") or k
        found = {}
        for channel, channel_model in model.channel_models.items():
            fit = next(key for key, (kept, _) in self.fits.items() if kept is channel_model)
            key = (*fit, id(queries), depth)
            if key not in self.cached_lists:
                self.cached_lists[key] = channel_model.recommend(queries, depth).persist(StorageLevel.MEMORY_AND_DISK)
            found[channel] = self.cached_lists[key]
        return found

    def release(self) -> None:
        for frame in self.cached_lists.values():
            frame.unpersist()
        for model, _ in self.fits.values():
            model.unpersist()
        self.fits, self.cached_lists = {}, {}
