"""Write the bundled ml-latest-small (spark_retrieval/data/bundled/ml-latest-small/) from the GroupLens files.

    python scripts/bundle_ml_latest_small.py [SOURCE_FOLDER]

SOURCE_FOLDER holds the original ``ratings.csv``, ``movies.csv`` and ``README.txt`` (default:
``../shared/data/ml-latest-small``). The CSV columns are kept as they are, in compact types, one parquet
file each; the loader parses them exactly as it parses the CSVs. The README carries the licence, which
requires it to travel with the data.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ml-latest-small"
TARGET = REPO / "spark_retrieval" / "data" / "bundled" / "ml-latest-small"

RATINGS_TYPES = {"userId": pa.int32(), "movieId": pa.int32(), "rating": pa.float32(), "timestamp": pa.int64()}
MOVIES_TYPES = {"movieId": pa.int32(), "title": pa.string(), "genres": pa.string()}


def read_csv(path: Path, types: dict[str, pa.DataType]) -> pa.Table:
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    if table.column_names != list(types):
        raise SystemExit(f"{path}: expected columns {list(types)}, found {table.column_names}")
    return table


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", compression_level=19, use_dictionary=True)


def main(source: Path) -> None:
    ratings = read_csv(source / "ratings.csv", RATINGS_TYPES).sort_by([("userId", "ascending"), ("timestamp", "ascending")])
    movies = read_csv(source / "movies.csv", MOVIES_TYPES)
    TARGET.mkdir(parents=True, exist_ok=True)
    write_parquet(ratings, TARGET / "ratings.parquet")
    write_parquet(movies, TARGET / "movies.parquet")
    shutil.copyfile(source / "README.txt", TARGET / "README.txt")
    for path in sorted(TARGET.iterdir()):
        print(f"{path.relative_to(REPO)}: {path.stat().st_size:,} bytes")
    print(f"{ratings.num_rows:,} ratings, {movies.num_rows:,} movies")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
