"""Tune every model with the same budget on a validation split of train; the test set is never an input.

``tune(train, models, trials, …)`` splits ``train`` once more by the protocol (``validation_split``: each
user's last ``holdout`` train events are validation events, those rated above ``positive_threshold`` are
validation queries), then runs one Optuna study per model: ``trials`` trials, each an ordinary Spark fit on
validation-train, ``recommend`` of the validation queries and ``evaluate`` @``k``; the study maximises
``metric`` (ndcg or recall). ``tune`` takes no test DataFrame, so no tuning decision can depend on a test
event: the test set is touched once, afterwards, by the benchmark with the chosen parameters.

Trial 1 of every model is its row's own settings (preset and defaults, within the space; a two-tower row's
epoch count is chosen on validation as in every trial), so a tuned model is never chosen below those settings
on validation; the next trials are TPE's. A merged row's unset per-channel weights or shares enter trial 1 as the
domain's ``unset`` entry for every channel (1: the same merge); a setting outside its domain cannot be enqueued,
so trial 1 samples that parameter.

What is searched: the model's ``SEARCH_SPACE`` (declared next to its Params), minus the parameters its
registry row's preset fixes (a ``dssm_bce_neg10`` row keeps its loss and its 10 negatives), minus the domains
whose ``when`` does not hold for the row (ALS's ``alpha`` on explicit ratings, DSSM's ``num_negatives`` with
sampled softmax). A model with nothing to search (Global Hot) is evaluated once at its defaults.

Epochs of the models that train in epochs (the two-tower ones): each trial fits with the validation queries,
at most ``max_epochs`` epochs (default 12; a row's preset ``epochs`` is not a limit here), scores the validation
set after every epoch, stops after ``patience`` (default 3) epochs without a better score and keeps its best epoch; the trial's
parameters then say ``epochs`` = that best epoch, which is what ``benchmark --params`` refits with.

Determinism and resume: the sampler of trial ``i`` of a model is ``TPESampler(seed=f(seed, model, i))``, so
trial ``i``'s parameters depend only on the seed and the earlier trials' results. With ``storage_dir`` the
studies live in ``storage_dir/study.db`` (Optuna's SQLite storage): a second ``tune`` into the same folder
counts the completed trials and runs only the missing ones, and gives the result an uninterrupted run
gives. A study made with other settings (metric, k, split, seed, space) or on other data is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from .data.split import validation_split
from .errors import DataNotFoundError, InvalidParameterError
from .evaluation import evaluate
from .models.multi_channel import ChannelCache, MultiChannel
from .models.registry import MODELS, build_estimator, resolve_models
from .progress import SILENT
from .search import Domain, Each, describe_space
from .storage import write_local_atomically
from .validation import is_integer, is_real

TUNING_METRICS = ("ndcg", "recall")
STUDY_FILE = "study.db"
TUNED_FILE = "tuned.json"
PLOT_FILE = "tuning.png"
MAX_EPOCHS = 12
PATIENCE = 3
EPOCHS = "epochs"
SETTINGS_ATTR = "spark_retrieval_settings"


# -- what is searched --------------------------------------------------------------------------------
def search_space(
    name: str, space: Mapping[str, Domain] | None = None, fixed: Mapping[str, Any] | None = None
) -> dict[str, Domain]:
    """The domains tuned for registry model ``name``: its declared ``SEARCH_SPACE`` (or ``space``) minus the
    parameters its preset or ``fixed`` sets and the domains whose ``when`` does not hold for the row's settings."""
    if name not in MODELS:
        raise InvalidParameterError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    entry = MODELS[name]
    estimator_class = entry.estimator_class()
    declared = dict(getattr(estimator_class, "SEARCH_SPACE", {}) if space is None else space)
    for key, domain in declared.items():
        if not isinstance(domain, Domain):
            raise InvalidParameterError(f"search space of {name}: {key} is not a search domain: {domain!r}")
        if not estimator_class().hasParam(key):
            raise InvalidParameterError(f"search space of {name}: {estimator_class.__name__} has no parameter {key!r}")
    fixed = dict(fixed or {})
    settings = build_estimator(name, 0, fixed).params_dict()
    pinned = set(entry.preset) | set(fixed)
    searched = {key: domain for key, domain in declared.items() if key not in pinned and domain.applies(settings)}
    return {key: domain.resolved(settings) if isinstance(domain, Each) else domain for key, domain in searched.items()}


def study_seed(seed: int, model: str, trial: int) -> int:
    """The TPE sampler's seed for trial ``trial`` (0-based) of ``model``: stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}:{model}:{trial}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# -- results -----------------------------------------------------------------------------------------
@dataclass
class ModelTuning:
    """One model's study: the best parameters (``fixed`` included), their validation score and every trial."""

    name: str
    params: dict[str, Any]
    score: float
    space: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return len(self.table)

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params, "score": self.score, "trials": self.trials, "space": self.space, "table": self.table}


@dataclass
class TuningResult:
    metric: str
    k: int
    trials: int
    seed: int
    holdout: int
    positive_threshold: float
    validation: dict[str, int]
    models: dict[str, ModelTuning] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What ``tuned.json`` holds; ``models[name]["params"]`` is what ``read_tuned_params`` gives back."""
        return {
            "metric": self.metric,
            "k": self.k,
            "trials": self.trials,
            "seed": self.seed,
            "holdout": self.holdout,
            "positive_threshold": self.positive_threshold,
            "validation": self.validation,
            "models": {name: tuning.to_json() for name, tuning in self.models.items()},
        }


# -- the search --------------------------------------------------------------------------------------
def check_tuning_arguments(models, trials, metric, k, holdout, seed, max_epochs=MAX_EPOCHS, patience=PATIENCE) -> list[str]:
    """Raise ``InvalidParameterError`` for a bad argument (before any work); the resolved model names."""
    names = resolve_models(models)
    for name, value in (("max_epochs", max_epochs), ("patience", patience)):
        if not is_integer(value) or value < 1:
            raise InvalidParameterError(f"{name} must be a positive integer, got {value!r}")
    if not is_integer(trials) or trials < 1:
        raise InvalidParameterError(f"trials must be a positive integer, got {trials!r}")
    if metric not in TUNING_METRICS:
        raise InvalidParameterError(f"metric must be one of {', '.join(TUNING_METRICS)}, got {metric!r}")
    if not is_integer(k) or k < 1:
        raise InvalidParameterError(f"k must be a positive integer, got {k!r}")
    if not is_integer(holdout) or holdout < 1:
        raise InvalidParameterError(f"holdout must be a positive integer, got {holdout!r}")
    if not is_integer(seed):
        raise InvalidParameterError(f"seed must be an integer, got {seed!r}")
    return names


def tune(
    train: DataFrame,
    models: str | Sequence[str],
    trials: int,
    metric: str = "ndcg",
    k: int = 20,
    holdout: int = 3,
    positive_threshold: float = 2.0,
    seed: int = 0,
    storage_dir: str | None = None,
    progress: Callable[[str], None] = SILENT,
    spaces: Mapping[str, Mapping[str, Domain]] | None = None,
    fixed: Mapping[str, Mapping[str, Any]] | None = None,
    side: Mapping[str, DataFrame | None] | None = None,
    max_epochs: int = MAX_EPOCHS,
    patience: int = PATIENCE,
) -> TuningResult:
    """Tune each of ``models`` with ``trials`` trials on the validation split of ``train`` (see the module
    docstring); the test set is not an argument.

    ``train``: the benchmark split's train interactions (``temporal_split(...).train``). ``spaces``: per model,
    a search space replacing its declared one; ``fixed``: per model, parameters set in every trial and not
    searched (both optional). ``storage_dir``: a local folder for ``study.db`` (resume); ``None`` keeps the
    studies in memory. ``side``: ``item_features`` / ``user_features`` for the models that read them.
    ``max_epochs`` / ``patience``: a two-tower trial's epoch limit (unless ``fixed`` sets ``epochs``) and its epochs
    without a better score.
    Bad arguments raise ``InvalidParameterError`` before anything is read or written.
    """
    names = check_tuning_arguments(models, trials, metric, k, holdout, seed, max_epochs, patience)
    if not is_real(positive_threshold):
        raise InvalidParameterError(f"positive_threshold must be a finite number, got {positive_threshold!r}")
    spaces, fixed = dict(spaces or {}), dict(fixed or {})
    for what, given in (("spaces", spaces), ("fixed", fixed)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise InvalidParameterError(f"{what} names model(s) that are not tuned: {', '.join(unknown)}")
    plans, merged = {}, {}
    for name in names:
        estimator = build_estimator(name, seed, fixed.get(name))  # bad fixed parameters fail here, naming the class
        plans[name] = search_space(name, spaces.get(name), fixed.get(name))
        if isinstance(estimator, MultiChannel):
            merged[name] = estimator.get("channels")
    # Merged rows last: their channels are fitted with the parameters those channels' own rows just won.
    names = [name for name in names if name not in merged] + [name for name in names if name in merged]

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    if storage_dir is not None:
        storage_dir = os.path.abspath(storage_dir)
        storage = f"sqlite:///{os.path.join(storage_dir, STUDY_FILE)}"
    settings = {
        name: {
            "metric": metric,
            "k": k,
            "holdout": holdout,
            "positive_threshold": float(positive_threshold),
            "seed": seed,
            "space": describe_space(plans[name]),
            "fixed": fixed.get(name, {}),
            **({EPOCHS: epoch_settings(fixed.get(name, {}), max_epochs, patience)} if trains_in_epochs(name) else {}),
        }
        for name in names
    }
    existing = _existing_studies(optuna, storage, names)
    for name, study in existing.items():  # a merged row's fixed channel parameters are known once its channels are
        _check_settings(study, settings[name], storage_dir, name, ignore=("validation",) + (("fixed",) if name in merged else ()))

    split = validation_split(train, holdout=holdout, positive_threshold=float(positive_threshold))
    validation_train = split.train.persist(StorageLevel.MEMORY_AND_DISK)
    validation_queries = split.test.persist(StorageLevel.MEMORY_AND_DISK)
    channels = ChannelCache(validation_train, progress)  # a merged row's trials share its channels' fits and lists
    try:
        counts = split.counts()
        progress(
            f"validation split of train: last {holdout} train events per user, queries rated > {positive_threshold:g}: "
            + ", ".join(f"{key} {value:,}" for key, value in counts.items())
        )
        split.require_queries(counts, "the validation split of train")
        for name in names:
            settings[name]["validation"] = counts
        for name, study in existing.items():
            if name not in merged:
                _check_settings(study, settings[name], storage_dir, name)
        if storage_dir is not None:
            os.makedirs(storage_dir, exist_ok=True)

        result = TuningResult(metric, k, trials, seed, holdout, float(positive_threshold), counts)
        for name in names:
            if name in merged:
                fixed[name] = with_tuned_channels(fixed.get(name, {}), merged[name], result)
                settings[name]["fixed"] = fixed[name]
                if name in existing:
                    _check_settings(existing[name], settings[name], storage_dir, name)
            result.models[name] = _tune_model(
                optuna, storage, name, plans[name], fixed.get(name, {}), settings[name], trials, seed,
                validation_train, validation_queries, progress, dict(side or {}), channels,
            )
        return result
    finally:
        channels.release()
        validation_train.unpersist()
        validation_queries.unpersist()


def row_settings(name: str, space: Mapping[str, Domain], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The row's own values of the searched parameters (preset and defaults, ``fixed`` applied), as Optuna
    stores them; a value outside its domain is left out (that parameter is sampled)."""
    settings = build_estimator(name, 0, fixed).params_dict()
    encoded: dict[str, Any] = {}
    for key, domain in space.items():
        encoded.update(domain.encode(settings.get(key), key))
    return encoded


def trains_in_epochs(name: str) -> bool:
    """Whether registry model ``name`` scores validation queries after each epoch (the two-tower rows)."""
    return MODELS[name].estimator_class()().hasParam("patience")


def epoch_settings(fixed: Mapping[str, Any], max_epochs: int = MAX_EPOCHS, patience: int = PATIENCE) -> dict[str, int]:
    """A trial's epoch limit (``fixed`` epochs, else ``max_epochs``) and patience."""
    return {"max": int(fixed.get(EPOCHS, max_epochs)), "patience": int(patience)}


def with_tuned_channels(fixed: Mapping[str, Any], channels: Sequence[str], result: "TuningResult") -> dict[str, Any]:
    """A merged row's fixed parameters for tuning it after the single rows of the same run.

    Unless ``fixed`` names the channels, each channel is replaced by the row of its family (``item_to_item``,
    ``factorisation``, ``two_tower``, ``popularity``) with the best validation score in this run (ties: the
    channel itself, then registry order; a row already taken keeps the channel as it was). Each channel tuned in
    this run is then fitted with the parameters it won, which is what ``benchmark --params`` fits its own row
    with; ``channel_params`` given in ``fixed`` win.
    """
    chosen = list(fixed.get("channels") or channels)
    if "channels" not in fixed:
        order = list(MODELS)
        for index, channel in enumerate(chosen):
            rivals = [name for name in result.models if MODELS[name].family == MODELS[channel].family]
            if not rivals:
                continue
            best = max(rivals, key=lambda name: (result.models[name].score, name == channel, -order.index(name)))
            if best not in chosen:
                chosen[index] = best
    tuned = {channel: result.models[channel].params for channel in chosen if channel in result.models}
    updated = {**fixed, "channels": chosen}  # said in tuned.json either way
    if tuned:
        updated["channel_params"] = {**tuned, **dict(fixed.get("channel_params") or {})}
    return updated


def _existing_studies(optuna, storage: str | None, names: list[str]) -> dict[str, Any]:
    if storage is None or not os.path.exists(storage.removeprefix("sqlite:///")):
        return {}
    present = set(optuna.get_all_study_names(storage))
    return {name: optuna.load_study(study_name=name, storage=storage) for name in names if name in present}


def _check_settings(study, settings: dict[str, Any], storage_dir: str, name: str, ignore: tuple[str, ...] = ()) -> None:
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        return  # created but killed before its settings were written: nothing in it to mix up
    expected = json.loads(json.dumps(settings))
    for key in sorted(set(stored) | set(expected)):
        if key in ignore:
            continue
        if stored.get(key) != expected.get(key):
            raise InvalidParameterError(
                f"{os.path.join(storage_dir, STUDY_FILE)}: the {name} study was run with {key}={stored.get(key)!r}, "
                f"not {expected.get(key)!r}; tune into another folder or with the same settings and data"
            )


def _tune_model(
    optuna,
    storage: str | None,
    name: str,
    space: dict[str, Domain],
    fixed: dict[str, Any],
    settings: dict[str, Any],
    trials: int,
    seed: int,
    validation_train: DataFrame,
    validation_queries: DataFrame,
    progress: Callable[[str], None],
    side: dict[str, DataFrame | None],
    channels: ChannelCache,
) -> ModelTuning:
    from optuna.trial import TrialState

    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize")
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, json.loads(json.dumps(settings)))
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study.tell(stale.number, state=TrialState.FAIL)  # left by a killed run; its trial is run again
    metric, k = settings["metric"], settings["k"]
    target = trials if space else 1
    done = _completed(study, TrialState)
    label = f"tune {name}"
    if not space:
        progress(f"{label}: nothing to tune, evaluating its defaults once")
    if done:
        progress(f"{label}: {min(len(done), target)} of {target} trial(s) already in the study, {max(0, target - len(done))} to run")
    best = max((t.value for t in done[:target]), default=-math.inf)
    for index in range(len(done), target):
        study.sampler = optuna.samplers.TPESampler(seed=study_seed(seed, name, index))
        if index == 0 and space:  # the first trial is the row's own settings: tuning starts from the defaults
            study.enqueue_trial(row_settings(name, space, fixed))
        trial = study.ask()
        try:
            suggested = {key: domain.suggest(trial, key) for key, domain in space.items()}
            started = time.perf_counter()
            threshold = settings["positive_threshold"]
            params, given = {**fixed, **suggested}, dict(side)
            if EPOCHS in settings:  # the best epoch on validation, at most the limit
                params.update(
                    epochs=settings[EPOCHS]["max"], patience=settings[EPOCHS]["patience"],
                    validation_metric=metric, validation_k=k,
                )
                given["validation_queries"] = validation_queries
            estimator = build_estimator(name, seed, params, threshold, getattr(progress, "enabled", None), **given)
            if isinstance(estimator, MultiChannel):  # only the merge changes between trials
                model, _ = channels.merged_model(estimator)
                recommendations = model.merge(channels.lists(model, validation_queries, k), k)
            else:
                model = estimator.fit(validation_train)
                recommendations = model.recommend(validation_queries, k)
                if EPOCHS in settings:
                    suggested = {**suggested, EPOCHS: model.metadata["training"]["best_epoch"]}
            metrics = evaluate(recommendations, validation_queries, k=k)
            seconds = time.perf_counter() - started
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        score = float(metrics[metric])
        trial.set_user_attr("params", suggested)
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("metrics", metrics)
        study.tell(trial, score)
        best = max(best, score)
        origin = " (the row's settings)" if index == 0 and space else ""
        progress(f"{label}: trial {index + 1}/{target}{origin} {_shown(suggested)} {metric}@{k} {score:.4f} (best {best:.4f})")

    table = [
        {
            "number": index,
            "params": _trial_params(trial, space),
            "score": float(trial.value),
            "seconds": trial.user_attrs.get("seconds"),
        }
        for index, trial in enumerate(_completed(study, TrialState)[:target])
    ]
    chosen = max(table, key=lambda row: (row["score"], -row["number"]))  # ties: the earlier trial
    progress(f"{label}: best {metric}@{k} {chosen['score']:.4f} with {_shown(chosen['params'])}")
    return ModelTuning(
        name=name, params={**fixed, **chosen["params"]}, score=chosen["score"], space=describe_space(space), table=table
    )


def _completed(study, TrialState) -> list:
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def _trial_params(trial, space: dict[str, Domain]) -> dict[str, Any]:
    if "params" in trial.user_attrs:
        return dict(trial.user_attrs["params"])
    return {key: space[key].decode(value) if key in space else value for key, value in trial.params.items()}


def _shown(params: Mapping[str, Any]) -> str:
    def value(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)

    return "{" + ", ".join(f"{key}: {value(v)}" for key, v in params.items()) + "}"


# -- files -------------------------------------------------------------------------------------------
def tuning_png(document: dict[str, Any]) -> bytes:
    """Validation score per trial, one line per model (its running best dashed), as PNG bytes (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8.0, 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, (name, model) in enumerate(document["models"].items()):
        color = f"C{index % 10}"
        numbers = [row["number"] + 1 for row in model["table"]]
        scores = [row["score"] for row in model["table"]]
        if not model["space"]:  # nothing tuned: its one score, as a level to beat
            axes.axhline(scores[0], linestyle=":", linewidth=1.2, label=f"{name} (no parameters)", color=color)
            continue
        running = [max(scores[: i + 1]) for i in range(len(scores))]
        axes.plot(numbers, scores, marker="o", markersize=3, linewidth=0.8, label=name, color=color)
        axes.plot(numbers, running, linestyle="--", linewidth=1.2, color=color)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {document['metric']}@{document['k']}")
    axes.set_title(f"Tuning: {document['trials']} trial(s) per model, seed {document['seed']} (dashed: best so far)")
    axes.grid(alpha=0.3)
    if document["models"]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_tuning(result: TuningResult | dict[str, Any], folder: str) -> None:
    """Write ``tuned.json`` and ``tuning.png`` into a local ``folder`` (each file whole or not at all)."""
    document = result.to_json() if isinstance(result, TuningResult) else result
    files = {
        TUNED_FILE: (json.dumps(document, indent=2, sort_keys=True) + "\n").encode(),
        PLOT_FILE: tuning_png(document),
    }
    for name, data in files.items():
        write_local_atomically(os.path.join(folder, name), data)


def read_tuned_params(path: str, models: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{model: params}`` from a ``tuned.json`` (only the ``models`` asked for, when given).

    Every entry is checked, asked for or not: an unknown model name, a parameter the model does not have or a
    value its converter refuses is an ``InvalidParameterError`` naming the file and the key. The values come
    back converted (``10.0`` for an integer parameter gives ``10``).
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"no tuned parameters at {path}") from None
    except OSError as error:
        raise InvalidParameterError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidParameterError(f"{path}: not JSON: {error}") from None
    entries = document.get("models") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise InvalidParameterError(f"{path}: expected an object with a 'models' object (what 'tune' writes)")
    found: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        if name not in MODELS:
            raise InvalidParameterError(f"{path}: models.{name}: unknown model; choose from: {', '.join(MODELS)}")
        params = entry.get("params") if isinstance(entry, dict) else None
        if not isinstance(params, dict):
            raise InvalidParameterError(f"{path}: models.{name}.params: expected an object of parameters")
        try:
            estimator = build_estimator(name, 0, params)
        except InvalidParameterError as error:
            raise InvalidParameterError(f"{path}: models.{name}.params: {error}") from None
        found[name] = {key: estimator.get(key) for key in params}
    if models is None:
        return found
    return {name: found[name] for name in resolve_models(models) if name in found}


def read_tuned(path: str, models: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{model: {"params": …, "score": validation score}}`` from a ``tuned.json``, checked as in
    ``read_tuned_params``: what ``benchmark --params`` refits each model with."""
    params = read_tuned_params(path, models)
    with open(path, encoding="utf-8") as stream:
        entries = json.load(stream)["models"]
    return {name: {"params": values, "score": entries[name].get("score")} for name, values in params.items()}
