import json
import os
import subprocess
import sys

import pytest

from spark_retrieval.cli import main

ML1M_RATINGS = "\n".join(
    f"{user}::{item}::{(user + item) % 5 + 1}::{978300000 + 60 * n}"
    for user in range(1, 9)
    for n, item in enumerate(range(user, user + 8))
)
ML1M_MOVIES = "\n".join(f"{item}::Movie {item} (1999)::Drama|Comedy" for item in range(1, 17))
ML1M_USERS = "\n".join(f"{user}::F::25::7::0213{user}" for user in range(1, 9))


def write_ml1m(folder, ratings=ML1M_RATINGS):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("ratings.dat", ratings), ("movies.dat", ML1M_MOVIES), ("users.dat", ML1M_USERS)):
        (folder / name).write_text(text + "\n", encoding="latin-1")
    return folder


def test_benchmark_end_to_end(spark, tmp_path, capsys):
    data = write_ml1m(tmp_path / "ml-1m")
    out = tmp_path / "out"
    models = ["global_hot", "item_cf", "swing", "als"]
    code = main(["benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--k", "5", "--models", ",".join(models), "--output", str(out),
                 "--bootstrap", "0"])  # intervals: test_significance.py
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "R@5" in captured.out
    assert all(f"| {name} |" in captured.out for name in models)
    assert "fitting global_hot" in captured.err  # stage lines on stderr
    report = json.loads((out / "results.json").read_text())
    assert report["dataset"] == "ml-1m" and report["k"] == 5
    assert report["split"]["users"] == 8 and report["split"]["test_queries"] > 0
    assert [row["model"] for row in report["results"]] == models
    row = report["results"][1]
    assert row["queries"] == report["split"]["test_queries"] and row["params"]["k_neighbours"] == 100
    for key in ("precision", "recall", "map", "ndcg", "hit_rate", "coverage", "fit_seconds", "recommend_seconds", "params"):
        assert key in row
    assert "| global_hot |" in (out / "results.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "results.png"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--k", "0"], "expected a positive integer"),
        (["--k", "20,20"], "distinct integers >= 1, got '20,20'"),
        (["--models", "global_hot,nope"], "unknown model name(s): nope"),
        (["--dataset", "ml-2m"], "unknown dataset 'ml-2m'"),
        (["--dataset", "ml-1m", "--data-dir", "/no/such/folder"], "not found: /no/such/folder"),
    ],
)
def test_bad_arguments_fail_before_spark(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["benchmark", *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "ratings, message",
    [
        (ML1M_RATINGS + "\n3::4::five::978300000", "ratings.dat"),
        (ML1M_RATINGS + "\n3::4", "ratings.dat"),
        (ML1M_RATINGS + "\n::4::5::978300000", "ratings.dat"),
        ("", "empty"),
    ],
    ids=["non-numeric rating", "malformed line", "null id", "empty dataset"],
)
def test_bad_data_is_one_line_and_nothing_written(spark, tmp_path, capsys, ratings, message):
    data = write_ml1m(tmp_path / "ml-1m", ratings=ratings)
    out = tmp_path / "out"
    assert main(["benchmark", "--dataset", "ml-1m", "--data-dir", str(data), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_console_script_exit_code(tmp_path):
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "spark-retrieval"), "benchmark", "--models", "bogus"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown model name(s): bogus") and "Traceback" not in result.stderr


def test_a_bootstrap_too_large_for_its_sums_is_exit_2_and_one_line(capsys):
    from spark_retrieval.command import EXIT_USER_ERROR, exit_code_of
    from spark_retrieval.significance import ResampleOverflowError

    def overflowing() -> int:
        raise ResampleOverflowError("bootstrap sums overflow a long at 1e-12 resolution; run without intervals (--bootstrap 0)")

    assert exit_code_of(overflowing) == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: bootstrap sums overflow a long at 1e-12 resolution; run without intervals (--bootstrap 0)\n"


def test_training_failure_is_exit_3_and_one_line(capsys):
    """A two-tower fit whose process died (TrainingFailedError, not a user mistake): its own exit code and its
    message folded onto one ``error:`` line. The whole path through jobs/train.py with a killed Horovod rank is
    test_jobs_two_tower.py::test_a_killed_training_rank_ends_the_train_job_with_exit_3_and_one_line."""
    from spark_retrieval.command import EXIT_TRAINING_FAILED, exit_code_of
    from spark_retrieval.errors import TrainingFailedError

    def failing() -> int:
        raise TrainingFailedError("dssm training failed during epoch 2/3: rank 1 exited with code 137\n"
                                  "  (SIGKILL). Fit again with the same checkpoint_dir", rank=1, exit_code=137)

    assert exit_code_of(failing) == EXIT_TRAINING_FAILED == 3
    err = capsys.readouterr().err
    assert err == ("error: dssm training failed during epoch 2/3: rank 1 exited with code 137 (SIGKILL). "
                   "Fit again with the same checkpoint_dir\n")
