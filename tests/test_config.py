import glob
import os

import pytest

from spark_retrieval.config import ConfigError, load_config, parse_config
from spark_retrieval.jobs import build_estimator, validate

BASE = """
data: {dataset: ml-1m, path: "${DATA_DIR}"}
model: {name: item_cf, params: {k_neighbours: 50}}
k: 10
output: "${OUTPUT:-/tmp/out}"
"""
ENV = {"DATA_DIR": "/data/ml-1m"}


def test_substitution_defaults_and_types():
    config = parse_config(BASE, "conf.yaml", environ=ENV)
    assert config.data.path == "/data/ml-1m" and config.output == "/tmp/out"
    assert config.data.holdout == 3 and config.data.positive_threshold is None and config.k == 10  # 2.0 with ratings
    assert config.model.params == {"k_neighbours": 50}
    assert parse_config(BASE, "conf.yaml", environ={**ENV, "OUTPUT": "s3://b/p"}).path("metrics") == "s3://b/p/metrics"


def test_overrides_use_dotted_keys_and_yaml_scalars():
    config = parse_config(
        BASE, "conf.yaml", ["model.params.k_neighbours=7", "data.positive_threshold=3", "master=local[1]"], ENV
    )
    assert config.model.params["k_neighbours"] == 7 and config.data.positive_threshold == 3.0
    assert config.master == "local[1]"
    assert build_estimator(config).get("k_neighbours") == 7


@pytest.mark.parametrize(
    "text, overrides, environ, message",
    [
        (BASE, [], {}, "conf.yaml: data.path: environment variable DATA_DIR is not set"),
        (BASE + "kk: 3\n", [], ENV, "conf.yaml: unknown key 'kk'"),
        (BASE, ["data.holdot=2"], ENV, "conf.yaml: unknown key 'data.holdot'"),
        (BASE, ["k=ten"], ENV, "conf.yaml: k: expected an integer, got str 'ten'"),
        (BASE, ["k=true"], ENV, "conf.yaml: k: expected an integer"),
        (BASE, ["data=3"], ENV, "conf.yaml: data: expected a mapping"),
        ("model: {name: x}\noutput: o\n", [], ENV, "conf.yaml: missing required key 'data'"),
        ("data: [1\n", [], ENV, "conf.yaml: not valid YAML (line 2)"),
        (BASE, ["novalue"], ENV, "expected key=value"),
    ],
)
def test_invalid_configs_name_file_and_key(text, overrides, environ, message):
    with pytest.raises(ConfigError) as error:
        parse_config(text, "conf.yaml", overrides, environ)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "override, job, message",
    [
        ("model.params.k_neigbours=5", "train", "unknown key 'model.params.k_neigbours' for item_cf"),
        ("model.params.k_neighbours=0", "train", "model.params.k_neighbours: ItemCF: k_neighbours must be an integer >= 1"),
        ("model.name=nope", "train", "model.name: unknown model 'nope'"),
        ("data.dataset=ml-2m", "prepare", "data.dataset: unknown dataset 'ml-2m'"),
        ("models=global_hot,nope", "benchmark", "models: unknown model name(s): nope"),
        ("k=0", "evaluate", "k: expected a positive integer"),
    ],
)
def test_model_and_dataset_checked_before_spark(override, job, message):
    config = parse_config(BASE, "conf.yaml", [override], ENV)
    with pytest.raises(ConfigError) as error:
        validate(config, job)
    assert message in str(error.value) and "conf.yaml" in str(error.value)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "jobs", "conf", "*.yaml"))))
def test_shipped_configs_are_valid(path):
    config = load_config(path, environ={"DATA_DIR": "/data"})
    validate(config, "benchmark" if config.model is None else "train")
    assert config.data.dataset in os.path.basename(path)


def test_missing_config_file_is_a_user_error(tmp_path):
    from spark_retrieval.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="file not found"):
        load_config(str(tmp_path / "nope.yaml"))
