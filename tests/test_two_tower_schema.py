import json
import os
from pathlib import Path

import pytest
import yaml

from spark_retrieval.errors import DataNotFoundError, MalformedDataError
from spark_retrieval.models.two_tower.schema import SHIPPED_SCHEMAS, load_schema

REPO_SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "schemas")
TRAIN = ["user_id", "item_id", "rating", "timestamp"]
USERS = ["user_id", "gender", "age", "occupation", "zip"]
ITEMS = ["item_id", "title", "genres", "year"]


@pytest.mark.parametrize("name", ["dssm_movielens", "simplex_movielens"])
def test_shipped_schemas_load_and_match_the_repository_copies(name):
    schema = load_schema(name)
    assert {"user_id", "last_item", "recent_items", "gender", "age", "occupation"} == {f.name for f in schema.user}
    assert {f.name for f in schema.item} == {"item_id", "genres"}
    assert SHIPPED_SCHEMAS.joinpath(f"{name}.yaml").read_bytes() == Path(REPO_SCHEMAS, f"{name}.yaml").read_bytes()
    assert load_schema(os.path.join(REPO_SCHEMAS, f"{name}.yaml")) == schema


def test_side_features_are_used_when_their_table_is_given():
    schema = load_schema("dssm_movielens")
    full = schema.resolve(TRAIN, USERS, ITEMS)
    assert {f.name for f in full.user} == {"user_id", "last_item", "recent_items", "gender", "age", "occupation"}
    assert {f.name for f in full.item} == {"item_id", "genres"}
    bare = schema.resolve(TRAIN)
    assert {f.name for f in bare.user} == {"user_id", "last_item", "recent_items"}
    assert {f.name for f in bare.item} == {"item_id"}
    assert set(bare.used_vocabularies()) == {"user", "item"}


def test_a_given_table_lacking_a_named_column_is_rejected_with_its_name():
    schema = load_schema("dssm_movielens")
    with pytest.raises(MalformedDataError, match="occupation"):
        schema.resolve(TRAIN, [c for c in USERS if c != "occupation"], ITEMS)
    with pytest.raises(MalformedDataError, match="genres"):
        schema.resolve(TRAIN, USERS, ["item_id", "title"])
    with pytest.raises(MalformedDataError, match="timestamp"):
        schema.resolve(["user_id", "item_id", "rating"])


def test_round_trip_through_dict_and_embedding_resize():
    schema = load_schema("dssm_movielens")
    # Saved models write metadata with sorted keys: feature order (the network's input layout) must survive.
    assert type(schema).from_dict(json.loads(json.dumps(schema.to_dict(), sort_keys=True))) == schema
    small = schema.with_embedding_dim(4)
    assert {f.embedding_dim for f in small.features} == {4}
    assert small.embeddings()["history_item"] == ("item", 4)


def write(tmp_path, document):
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def minimal(**user_feature):
    return {
        "vocabularies": {"user": {"table": "interactions", "column": "user_id"}, "item": {"table": "interactions", "column": "item_id"}},
        "towers": {
            "user": {"user_id": {"kind": "categorical", "source": "context", "vocabulary": "user", "embedding_dim": 4, **user_feature}},
            "item": {"item_id": {"kind": "categorical", "source": "interactions", "vocabulary": "item", "embedding_dim": 4}},
        },
    }


def test_malformed_schemas_are_rejected_with_the_culprit(tmp_path):
    assert load_schema(write(tmp_path, minimal())).user[0].name == "user_id"
    cases = [
        (minimal(kind="dense"), "kind"),
        (minimal(vocabulary="nope"), "vocabulary 'nope'"),
        (minimal(embedding_dim=0), "embedding_dim"),
        (minimal(colour="red"), "colour"),
        (minimal(source="item_features"), "source"),
    ]
    for document, message in cases:
        with pytest.raises(MalformedDataError, match=message):
            load_schema(write(tmp_path, document))
    no_item_id = minimal()
    no_item_id["towers"]["item"] = {}
    with pytest.raises(MalformedDataError, match="item_id"):
        load_schema(write(tmp_path, no_item_id))
    with pytest.raises(DataNotFoundError, match="dssm_movielens"):
        load_schema("no_such_schema")
