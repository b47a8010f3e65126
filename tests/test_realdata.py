"""Runs on the real MovieLens files in ../shared/data (never copied into the repo)."""

import json
from pathlib import Path

import pytest

from spark_retrieval.cli import main

ML_100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not (ML_100K / "u.data").exists(), reason=f"ml-100k not found at {ML_100K}")
def test_benchmark_on_ml_100k(spark, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["benchmark", "--dataset", "ml-100k", "--data-dir", str(ML_100K), "--models", "global_hot", "--output", str(out), "--quiet",
                 "--bootstrap", "0"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "results.json").read_text())
    # 943 users, each with ≥ 20 ratings: 3 held out per user, 2,199 of those rated above 2.0 become queries.
    assert report["split"] == {
        "users": 943,
        "short_users": 0,
        "train_events": 97171,
        "held_out_events": 2829,
        "test_queries": 2199,
        "train_items": 1674,
        "duplicate_events": 0,
    }
    global_hot = report["results"][0]
    assert global_hot["queries"] == 2199
    assert global_hot["recall"] == pytest.approx(0.06503, abs=1e-4)
