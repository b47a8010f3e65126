"""Data: MovieLens loaders and download, a user's own interactions and event logs, the temporal split and query context."""

from .context import with_sequence_context
from .download import download_movielens
from .event_log import EventLog, load_event_log
from .interactions import load_interactions, validate_interactions
from .movielens import DATASETS, MovieLens, load_movielens
from .split import Split, temporal_split
from .synthetic import synthetic_interactions

__all__ = [
    "DATASETS",
    "EventLog",
    "MovieLens",
    "Split",
    "download_movielens",
    "load_event_log",
    "load_interactions",
    "load_movielens",
    "synthetic_interactions",
    "temporal_split",
    "validate_interactions",
    "with_sequence_context",
]
