"""MovieLens releases read from their native files (ml-latest-small also bundled), parsed by Spark.

Every file is read as text lines and split with column expressions; a line that does not fit its layout
gets null fields, which validation reports with the file and line number.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from .. import storage
from ..columns import AGE, GENDER, GENRES, ITEM_ID, OCCUPATION, RATING, TIMESTAMP, TITLE, USER_ID, YEAR, ZIP
from ..errors import DataNotFoundError, InvalidParameterError
from .interactions import LINE, POSITION, check_rows, id_problems, line_locator, read_lines, validate_interactions

DATASETS = ("ml-latest-small", "ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest")
BUNDLED = "ml-latest-small"
BUNDLED_DIR = Path(__file__).parent / "bundled" / BUNDLED
LATIN_1 = "ISO-8859-1"

ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
RATINGS_CSV_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIES_CSV_COLUMNS = ("movieId", "title", "genres")
NO_GENRES = "(no genres listed)"
TITLE_WITH_YEAR = r"^(.*?)\s*\((\d{4})\)\s*$"


@dataclass
class MovieLens:
    """One MovieLens release as DataFrames.

    ``ratings``: ``user_id long, item_id long, rating double, timestamp long`` (seconds).
    ``items``: ``item_id long, title string, genres array<string>, year int`` — the title without its
    trailing "(1995)", which becomes ``year`` (null where unknown).
    ``users``: ``user_id long, gender string, age int, occupation string, zip string``, or None for releases
    without demographics. In ml-1m ``age`` is the age-group code and ``occupation`` the numeric code that
    release uses.
    """

    name: str
    ratings: DataFrame
    items: DataFrame
    users: DataFrame | None = None


Fields = Callable[[Column], "list[Column]"]
"""Splits a line into its fields, all null when the line does not fit the layout."""
Columns = Callable[..., "list[Column]"]
"""Turns a file's fields into the typed output columns."""


@dataclass(frozen=True)
class TextLayout:
    """One native file: its name, how a line splits into fields, its encoding and its header line if any."""

    file: str
    fields: Fields
    encoding: str = "UTF-8"
    header: str | None = None


def delimited(separator: str, count: int) -> Fields:
    """Split on ``separator``; a line with other than ``count`` fields gets all fields null."""

    def fields(line: Column) -> list[Column]:
        parts = F.split(line, re.escape(separator))
        fitting = F.when(F.size(parts) == count, parts)
        return [F.get(fitting, i) for i in range(count)]

    return fields


def movies_csv_fields(line: Column) -> list[Column]:
    """``movieId,title,genres`` where only the title holds commas, and is then quoted (``""`` for ``"``)."""
    layout = r"^([^,]*),(.*),([^,]*)$"
    movie, title, genres = (F.when(line.rlike(layout), F.regexp_extract(line, layout, i)) for i in (1, 2, 3))
    unquoted = F.regexp_replace(F.regexp_replace(title, r'^"(.*)"$', "$1"), '""', '"')
    return [movie, unquoted, genres]


RATINGS_CSV = TextLayout("ratings.csv", delimited(",", 4), header=",".join(RATINGS_CSV_COLUMNS))
MOVIES_CSV = TextLayout("movies.csv", movies_csv_fields, header=",".join(MOVIES_CSV_COLUMNS))
U_DATA = TextLayout("u.data", delimited("\t", 4))
U_USER = TextLayout("u.user", delimited("|", 5))
U_ITEM = TextLayout("u.item", delimited("|", 5 + len(ML_100K_GENRES)), encoding=LATIN_1)
ITEMS_TSV = TextLayout("items.tsv", delimited("\t", 4), header="item_id\ttitle\tyear\tgenres")
RATINGS_DAT = TextLayout("ratings.dat", delimited("::", 4), encoding=LATIN_1)
USERS_DAT = TextLayout("users.dat", delimited("::", 5), encoding=LATIN_1)
MOVIES_DAT = TextLayout("movies.dat", delimited("::", 3), encoding=LATIN_1)


def rating_columns(user: Column, item: Column, rating: Column, timestamp: Column) -> list[Column]:
    return [
        user.try_cast("long").alias(USER_ID),
        item.try_cast("long").alias(ITEM_ID),
        rating.try_cast("double").alias(RATING),
        timestamp.try_cast("long").alias(TIMESTAMP),
    ]


def item_columns(item: Column, title: Column, genres: Column, year: Column) -> list[Column]:
    return [item.try_cast("long").alias(ITEM_ID), title.alias(TITLE), genres.alias(GENRES), year.alias(YEAR)]


def user_columns(user: Column, gender: Column, age: Column, occupation: Column, zip_code: Column) -> list[Column]:
    return [
        user.try_cast("long").alias(USER_ID),
        gender.alias(GENDER),
        age.try_cast("int").alias(AGE),
        occupation.alias(OCCUPATION),
        zip_code.alias(ZIP),
    ]


def title_without_year(title: Column) -> Column:
    return F.when(title.rlike(TITLE_WITH_YEAR), F.regexp_extract(title, TITLE_WITH_YEAR, 1)).otherwise(F.trim(title))


def year_of_title(title: Column) -> Column:
    return F.regexp_extract(title, TITLE_WITH_YEAR, 2).try_cast("int")


def genre_list(genres: Column) -> Column:
    """``Action|Comedy`` as an array; ``(no genres listed)`` as an empty one."""
    return F.filter(F.split(genres, r"\|"), lambda genre: (genre != "") & (genre != NO_GENRES))


def movie_columns(item: Column, title: Column, genres: Column) -> list[Column]:
    """Items from the ``movieId, title (year), genres`` layout of the CSV and ml-1m releases."""
    return item_columns(item, title_without_year(title), genre_list(genres), year_of_title(title))


def u_item_columns(
    item: Column, title: Column, release_date: Column, _video_date: Column, _url: Column, *flags: Column
) -> list[Column]:
    """Items from ml-100k's ``u.item``: the year from the title, else from the ``01-Jan-1995`` release date."""
    genres = F.filter(
        F.array(*(F.when(flag == "1", F.lit(name)) for name, flag in zip(ML_100K_GENRES, flags))),
        lambda genre: genre.isNotNull(),
    )
    year = F.coalesce(year_of_title(title), F.regexp_extract(release_date, r"(\d{4})$", 1).try_cast("int"))
    return item_columns(item, title_without_year(title), genres, year)


def items_tsv_columns(item: Column, title: Column, year: Column, genres: Column) -> list[Column]:
    return item_columns(item, title, genre_list(genres), year.try_cast("int"))


def u_user_columns(user: Column, age: Column, gender: Column, occupation: Column, zip_code: Column) -> list[Column]:
    return user_columns(user, gender, age, occupation, zip_code)


def file_in(spark: SparkSession, folder: str, name: str) -> str:
    """``folder/name``; when it is missing, the error lists what the folder holds (a wrong ``--dataset``?)."""
    path = f"{folder}/{name}"
    if not storage.path_exists(spark, path):
        present = storage.list_names(spark, folder)
        holds = f"it holds {', '.join(present[:6])}{', …' if len(present) > 6 else ''}" if present else "it is empty"
        raise DataNotFoundError(f"{name} not found in {folder} ({holds}; is it the right dataset?)")
    return path


def read_layout(spark: SparkSession, folder: str, layout: TextLayout, columns: Columns):
    """Parse ``layout``'s file in ``folder`` into ``columns(*fields)``; return the records, a locator and the path.

    Blank lines and the header are skipped. The records keep each line's text and position so that errors
    can name the line.
    """
    path = file_in(spark, folder, layout.file)
    lines = read_lines(spark, path, layout.encoding)
    is_data = F.trim(F.col(LINE)) != ""
    if layout.header is not None:
        is_data = is_data & (F.col(LINE) != layout.header)
    records = lines.select(*columns(*layout.fields(F.col(LINE))), LINE, *POSITION)
    return records.where(is_data), line_locator(records, is_data=is_data), path


def read_ratings(spark: SparkSession, folder: str, layout: TextLayout) -> DataFrame:
    records, locate, path = read_layout(spark, folder, layout, rating_columns)
    return validate_interactions(records, path, locate)


def read_table(spark: SparkSession, folder: str, layout: TextLayout, columns: Columns, key: str) -> DataFrame:
    """Items or users: every line must give a non-negative integer ``key``."""
    records, locate, path = read_layout(spark, folder, layout, columns)
    check_rows(records, path, id_problems(key), locate)
    return records.drop(LINE, *POSITION)


def load_csv_release(spark: SparkSession, name: str, folder: str) -> MovieLens:
    """ml-latest-small, ml-latest, ml-20m, ml-25m: ``ratings.csv`` and ``movies.csv`` with headers."""
    return MovieLens(
        name=name,
        ratings=read_ratings(spark, folder, RATINGS_CSV),
        items=read_table(spark, folder, MOVIES_CSV, movie_columns, ITEM_ID),
    )


def load_ml_100k(spark: SparkSession, name: str, folder: str) -> MovieLens:
    """``u.data`` and ``u.user``, and items from ``u.item`` or, where that is absent, ``items.tsv``."""
    if storage.path_exists(spark, f"{folder}/{U_ITEM.file}"):
        items = read_table(spark, folder, U_ITEM, u_item_columns, ITEM_ID)
    elif storage.path_exists(spark, f"{folder}/{ITEMS_TSV.file}"):
        items = read_table(spark, folder, ITEMS_TSV, items_tsv_columns, ITEM_ID)
    else:
        raise DataNotFoundError(f"neither {U_ITEM.file} nor {ITEMS_TSV.file} found in {folder}")
    return MovieLens(
        name=name,
        ratings=read_ratings(spark, folder, U_DATA),
        items=items,
        users=read_table(spark, folder, U_USER, u_user_columns, USER_ID),
    )


def load_ml_1m(spark: SparkSession, name: str, folder: str) -> MovieLens:
    """``ratings.dat``, ``users.dat``, ``movies.dat``: ``::``-separated, latin-1."""
    return MovieLens(
        name=name,
        ratings=read_ratings(spark, folder, RATINGS_DAT),
        items=read_table(spark, folder, MOVIES_DAT, movie_columns, ITEM_ID),
        users=read_table(spark, folder, USERS_DAT, user_columns, USER_ID),
    )


def read_bundled(spark: SparkSession, file: str) -> DataFrame:
    """A parquet file shipped inside the package. Under a local master, with the package installed as files,
    Spark reads it by path. Otherwise (a cluster, whose executors do not see this machine's files, or the
    package imported from a zip by ``--py-files``, where no path exists) the driver reads its bytes and sends
    the table: it is small and fixed (ml-latest-small, about 100K ratings), not data that grows."""
    path = BUNDLED_DIR / file
    if spark.sparkContext.master.startswith("local") and path.is_file():
        return spark.read.parquet(path.as_uri())
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = resources.files(__package__).joinpath(f"bundled/{BUNDLED}/{file}").read_bytes()
    return spark.createDataFrame(pq.read_table(pa.BufferReader(data)))


def load_bundled(spark: SparkSession) -> MovieLens:
    """The ml-latest-small copy inside the package: the original CSV columns as compact parquet."""
    ratings = read_bundled(spark, "ratings.parquet")
    movies = read_bundled(spark, "movies.parquet")
    source = f"bundled {BUNDLED}"
    return MovieLens(
        name=BUNDLED,
        ratings=validate_interactions(ratings.select(*rating_columns(*map(F.col, RATINGS_CSV_COLUMNS))), source),
        items=movies.select(*movie_columns(*map(F.col, MOVIES_CSV_COLUMNS))),
    )


LOADERS = {
    "ml-latest-small": load_csv_release,
    "ml-100k": load_ml_100k,
    "ml-1m": load_ml_1m,
    "ml-20m": load_csv_release,
    "ml-25m": load_csv_release,
    "ml-latest": load_csv_release,
}


def load_movielens(spark: SparkSession, name: str, path: str | os.PathLike | None = None) -> MovieLens:
    """Load MovieLens release ``name`` from the folder ``path`` holding its native files.

    ``path`` may be a local folder or any Hadoop URI (``s3a://``, ``hdfs://``). Without it, ``ml-latest-small``
    comes from the copy bundled with the package; other releases need it (``download_movielens`` fetches them).
    """
    if name not in DATASETS:
        raise InvalidParameterError(f"unknown MovieLens dataset {name!r}; known: {', '.join(DATASETS)}")
    if path is None:
        if name != BUNDLED:
            raise InvalidParameterError(
                f"{name} is not bundled: pass path= the folder holding its files (download_movielens fetches it)"
            )
        return load_bundled(spark)
    folder = str(path).rstrip("/")
    if not storage.path_exists(spark, folder):
        raise DataNotFoundError(f"MovieLens folder not found: {folder}")
    return LOADERS[name](spark, name, folder)
