"""Column names and the column contracts every layer shares: the one place they are spelled out."""

from __future__ import annotations

from typing import Iterable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .errors import MalformedDataError

USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"

QUERY_ID = "query_id"
LAST_ITEM = "last_item"
RECENT_ITEMS = "recent_items"

RECOMMENDATIONS = "recommendations"
NEIGHBOURS = "neighbours"
SCORE = "score"

TITLE = "title"
GENRES = "genres"
YEAR = "year"
GENDER = "gender"
AGE = "age"
OCCUPATION = "occupation"
ZIP = "zip"

INTERACTION_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP)

SCORED_ITEM = T.StructType([T.StructField(ITEM_ID, T.LongType()), T.StructField(SCORE, T.DoubleType())])
SCORED_ITEMS = T.ArrayType(SCORED_ITEM)
"""Every recommendation list and neighbour list: ``array<struct<item_id, score>>``, best first."""


def empty_recommendations() -> Column:
    return F.array().cast(SCORED_ITEMS)


def require_columns(df: DataFrame, columns: Iterable[str], source: str, renamed: Mapping[str, str] | None = None) -> None:
    """Raise ``MalformedDataError`` naming the ``columns`` that ``df`` lacks and the columns it has.

    ``renamed`` maps our names onto the user's (``{"user_id": "uid"}``) so the message can give both.
    """
    missing = [column for column in columns if column not in df.columns]
    if missing:
        ours = {theirs: name for name, theirs in (renamed or {}).items()}
        named = [repr(c) + (f" (mapped to {ours[c]})" if ours.get(c, c) != c else "") for c in missing]
        raise MalformedDataError(
            f"{source} has no column {', '.join(named)}; it has {', '.join(df.columns) or 'no columns'}"
        )
