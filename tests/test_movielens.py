"""MovieLens loaders on small fixture files written in each native layout, plus the bundled and real data."""

from pathlib import Path

import pytest

from spark_retrieval.data import DATASETS, MovieLens, load_movielens
from spark_retrieval.errors import DataNotFoundError, EmptyDataError, InvalidParameterError, MalformedDataError, UserError

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ML_100K = SHARED_DATA / "ml-100k"
ML_LATEST_SMALL = SHARED_DATA / "ml-latest-small"

RATING_TYPES = [("user_id", "bigint"), ("item_id", "bigint"), ("rating", "double"), ("timestamp", "bigint")]
ITEM_TYPES = [("item_id", "bigint"), ("title", "string"), ("genres", "array<string>"), ("year", "int")]
USER_TYPES = [("user_id", "bigint"), ("gender", "string"), ("age", "int"), ("occupation", "string"), ("zip", "string")]


def write(folder: Path, name: str, lines, encoding="utf-8") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes("".join(f"{line}\n" for line in lines).encode(encoding))


def genre_flags(*genres):
    names = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
             "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    return "|".join("1" if name in genres else "0" for name in names)


def ml_1m(folder: Path, ratings=None) -> Path:
    write(folder, "ratings.dat", ratings or ["1::1193::5::978300760", "1::661::3::978302109", "2::73::4::978298413"], "latin-1")
    write(folder, "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072"], "latin-1")
    write(folder, "movies.dat", [
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
        "73::Misérables, Les (1995)::Drama|Musical",
    ], "latin-1")
    return folder


def ml_100k(folder: Path, ratings=None, items="u.item") -> Path:
    write(folder, "u.data", ratings or ["196\t242\t3\t881250949", "186\t302\t3\t891717742", "196\t543\t1\t878887116"])
    write(folder, "u.user", ["196|49|M|writer|55105", "186|39|F|executive|00000"])
    if items == "u.item":
        write(folder, "u.item", [
            f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{genre_flags('Comedy')}",
            f"267|unknown||||{genre_flags('unknown')}",
            f"302|L.A. Confidential|01-Jan-1997||http://imdb|{genre_flags('Crime', 'Film-Noir', 'Mystery', 'Thriller')}",
            f"543|Misérables, Les (1995)|01-Jan-1995||http://imdb|{genre_flags('Drama', 'Musical')}",
        ], "latin-1")
    elif items == "items.tsv":
        write(folder, "items.tsv", [
            "item_id\ttitle\tyear\tgenres",
            "242\tKolya\t1996\tComedy",
            "267\tunkonwn\tunkonwn\tunknown",
            "302\tL.A. Confidential\t1997\tCrime|Film-Noir|Mystery|Thriller",
            "543\tMisérables, Les\t1995\tDrama|Musical",
        ])
    return folder


def csv_release(folder: Path, ratings=None) -> Path:
    default_ratings = ["1,1,4.0,964982703", "1,11,2.5,964981247", "2,7789,0.5,964983815"]
    write(folder, "ratings.csv", ["userId,movieId,rating,timestamp"] + (default_ratings if ratings is None else ratings))
    write(folder, "movies.csv", [
        "movieId,title,genres",
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy",
        '11,"American President, The (1995)",Comedy|Drama|Romance',
        '7789,"11\'09""01 - September 11 (2002)",Drama',
        "27008,From Dusk Till Dawn 2: Texas Blood Money (1999) ,Comedy|Crime|Horror",
        "143410,Hyena Road,(no genres listed)",
    ])
    return folder


def by_id(df, key):
    return {row[key]: row.asDict() for row in df.collect()}


def test_ml_1m_layout_and_latin_1(spark, tmp_path):
    data = load_movielens(spark, "ml-1m", str(ml_1m(tmp_path / "ml-1m")))
    assert isinstance(data, MovieLens) and data.name == "ml-1m"
    assert data.ratings.dtypes == RATING_TYPES and data.items.dtypes == ITEM_TYPES and data.users.dtypes == USER_TYPES
    assert sorted(tuple(r) for r in data.ratings.collect()) == [(1, 661, 3.0, 978302109), (1, 1193, 5.0, 978300760), (2, 73, 4.0, 978298413)]
    items = by_id(data.items, "item_id")
    assert items[73] == {"item_id": 73, "title": "Misérables, Les", "genres": ["Drama", "Musical"], "year": 1995}
    assert items[661]["genres"] == ["Animation", "Children's", "Musical"]
    assert by_id(data.users, "user_id")[2] == {"user_id": 2, "gender": "M", "age": 56, "occupation": "16", "zip": "70072"}


def test_ml_100k_layout_with_u_item(spark, tmp_path):
    data = load_movielens(spark, "ml-100k", ml_100k(tmp_path / "ml-100k"))
    assert data.ratings.dtypes == RATING_TYPES and data.items.dtypes == ITEM_TYPES and data.users.dtypes == USER_TYPES
    assert data.ratings.count() == 3
    items = by_id(data.items, "item_id")
    assert items[242] == {"item_id": 242, "title": "Kolya", "genres": ["Comedy"], "year": 1996}
    assert items[267] == {"item_id": 267, "title": "unknown", "genres": ["unknown"], "year": None}
    assert items[302]["year"] == 1997  # no year in the title: taken from the release date
    assert items[302]["genres"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items[543]["title"] == "Misérables, Les"
    assert by_id(data.users, "user_id")[186] == {"user_id": 186, "gender": "F", "age": 39, "occupation": "executive", "zip": "00000"}


def test_ml_100k_layout_with_items_tsv(spark, tmp_path):
    items = by_id(load_movielens(spark, "ml-100k", ml_100k(tmp_path / "ml-100k", items="items.tsv")).items, "item_id")
    assert sorted(items) == [242, 267, 302, 543]
    assert items[267] == {"item_id": 267, "title": "unkonwn", "genres": ["unknown"], "year": None}
    assert items[543] == {"item_id": 543, "title": "Misérables, Les", "genres": ["Drama", "Musical"], "year": 1995}


def test_csv_release_layout_with_quoted_titles(spark, tmp_path):
    folder = csv_release(tmp_path / "ml-25m")
    data = load_movielens(spark, "ml-25m", f"file://{folder}/")
    assert data.users is None
    assert data.ratings.dtypes == RATING_TYPES and data.items.dtypes == ITEM_TYPES
    assert sorted(r["rating"] for r in data.ratings.collect()) == [0.5, 2.5, 4.0]
    items = by_id(data.items, "item_id")
    assert items[11]["title"] == "American President, The" and items[11]["year"] == 1995
    assert items[7789] == {"item_id": 7789, "title": "11'09\"01 - September 11", "genres": ["Drama"], "year": 2002}
    assert items[27008]["title"] == "From Dusk Till Dawn 2: Texas Blood Money" and items[27008]["year"] == 1999
    assert items[143410] == {"item_id": 143410, "title": "Hyena Road", "genres": [], "year": None}


def test_malformed_line_names_file_and_line(spark, tmp_path):
    folder = ml_1m(tmp_path / "ml-1m", ratings=["1::1193::5::978300760", "1::661::3::978302109", "3::1193", "4::1::5::1"])
    with pytest.raises(MalformedDataError, match=r"ratings\.dat line 3: '3::1193'"):
        load_movielens(spark, "ml-1m", folder)


def test_blank_lines_are_skipped_but_counted(spark, tmp_path):
    folder = ml_1m(tmp_path / "ok", ratings=["1::1193::5::978300760", "", "2::73::4::978298413", "  "])
    assert load_movielens(spark, "ml-1m", folder).ratings.count() == 2
    folder = ml_1m(tmp_path / "bad", ratings=["1::1193::5::978300760", "", "2::73::4::978298413", "2::x::4::978298413"])
    with pytest.raises(MalformedDataError, match=r"ratings\.dat line 4: '2::x::4::978298413'"):
        load_movielens(spark, "ml-1m", folder)
    (folder / "ratings.dat").write_text("\n")
    with pytest.raises(EmptyDataError, match=r"ratings\.dat is empty"):
        load_movielens(spark, "ml-1m", folder)


def test_malformed_item_line_names_file_and_line(spark, tmp_path):
    folder = ml_1m(tmp_path / "ml-1m")
    write(folder, "movies.dat", ["1193::One Flew (1975)::Drama", "Toy Story (1995)::Comedy"], "latin-1")
    with pytest.raises(MalformedDataError, match=r"movies\.dat.*item_id.*movies\.dat line 2"):
        load_movielens(spark, "ml-1m", folder)


def test_line_numbers_count_the_csv_header(spark, tmp_path):
    folder = csv_release(tmp_path / "ml-latest", ratings=["1,1,4.0,964982703", "1,11,,964981247"])
    with pytest.raises(MalformedDataError, match=r"rating.*ratings\.csv line 3: '1,11,,964981247'"):
        load_movielens(spark, "ml-latest", folder)


def test_non_numeric_rating_and_negative_id(spark, tmp_path):
    folder = ml_100k(tmp_path / "a", ratings=["196\t242\t3\t881250949", "186\t302\tgood\t891717742"])
    with pytest.raises(MalformedDataError, match=r"non-numeric.*u\.data line 2"):
        load_movielens(spark, "ml-100k", folder)
    folder = ml_100k(tmp_path / "b", ratings=["196\t-242\t3\t881250949"])
    with pytest.raises(MalformedDataError, match=r"negative item_id.*u\.data line 1"):
        load_movielens(spark, "ml-100k", folder)


def test_missing_user_id(spark, tmp_path):
    folder = ml_100k(tmp_path / "ml-100k")
    write(folder, "u.user", ["196|49|M|writer|55105", "|39|F|executive|00000"])
    with pytest.raises(MalformedDataError, match=r"missing or non-integer user_id.*u\.user line 2"):
        load_movielens(spark, "ml-100k", folder)


def test_empty_ratings(spark, tmp_path):
    folder = ml_100k(tmp_path / "ml-100k")
    (folder / "u.data").write_bytes(b"")
    with pytest.raises(EmptyDataError, match=r"u\.data"):
        load_movielens(spark, "ml-100k", folder)
    with pytest.raises(EmptyDataError, match=r"ratings\.csv"):
        load_movielens(spark, "ml-20m", csv_release(tmp_path / "header-only", ratings=[]))


def test_millisecond_timestamps(spark, tmp_path):
    folder = csv_release(tmp_path / "ml-20m", ratings=["1,1,4.0,964982703000"])
    with pytest.raises(MalformedDataError, match="milliseconds"):
        load_movielens(spark, "ml-20m", folder)


def test_missing_folder_and_files(spark, tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere"):
        load_movielens(spark, "ml-1m", tmp_path / "nowhere")
    folder = csv_release(tmp_path / "ml-20m")
    (folder / "movies.csv").unlink()
    with pytest.raises(DataNotFoundError, match=r"movies\.csv"):
        load_movielens(spark, "ml-20m", folder)
    folder = ml_100k(tmp_path / "ml-100k", items=None)
    with pytest.raises(DataNotFoundError, match=r"u\.item.*items\.tsv"):
        load_movielens(spark, "ml-100k", folder)


def test_unknown_name_and_missing_path(spark):
    with pytest.raises(UserError, match="ml-1m") as error:
        load_movielens(spark, "ml-2m")
    assert all(name in str(error.value) for name in DATASETS)
    with pytest.raises(InvalidParameterError, match="not bundled"):
        load_movielens(spark, "ml-1m")


def test_bundled_ml_latest_small(spark):
    data = load_movielens(spark, "ml-latest-small")
    assert data.users is None
    assert data.ratings.dtypes == RATING_TYPES and data.items.dtypes == ITEM_TYPES
    assert data.ratings.count() == 100836
    assert data.ratings.select("user_id").distinct().count() == 610
    assert data.items.count() == 9742
    assert by_id(data.items.where("item_id = 1"), "item_id")[1] == {
        "item_id": 1,
        "title": "Toy Story",
        "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        "year": 1995,
    }


def test_bundled_data_is_sent_from_the_driver_to_a_remote_cluster(spark, monkeypatch):
    monkeypatch.setattr(spark.sparkContext, "master", "spark://cluster:7077")
    data = load_movielens(spark, "ml-latest-small")
    assert data.ratings.count() == 100836 and data.items.count() == 9742
    assert data.ratings.dtypes == RATING_TYPES and data.items.dtypes == ITEM_TYPES


@pytest.mark.realdata
@pytest.mark.skipif(not (ML_100K / "u.data").exists(), reason=f"ml-100k not found at {ML_100K}")
def test_real_ml_100k(spark):
    data = load_movielens(spark, "ml-100k", ML_100K)
    assert data.ratings.count() == 100000
    assert data.users.count() == 943
    assert data.ratings.select("user_id").distinct().count() == 943
    assert data.items.count() == 1682
    assert by_id(data.items.where("item_id = 543"), "item_id")[543]["title"] == "Misérables, Les"


@pytest.mark.realdata
@pytest.mark.skipif(not (ML_LATEST_SMALL / "ratings.csv").exists(), reason=f"ml-latest-small not found at {ML_LATEST_SMALL}")
def test_bundled_copy_matches_the_original_csv(spark):
    bundled = load_movielens(spark, "ml-latest-small")
    original = load_movielens(spark, "ml-latest-small", ML_LATEST_SMALL)
    assert original.ratings.exceptAll(bundled.ratings).isEmpty() and bundled.ratings.exceptAll(original.ratings).isEmpty()
    assert original.items.exceptAll(bundled.items).isEmpty() and bundled.items.exceptAll(original.items).isEmpty()
