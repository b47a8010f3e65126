"""benchmarks/choose_defaults.py: the shipped settings are the best mean validation score over data sets."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "choose_defaults.py"


def load_script():
    spec = importlib.util.spec_from_file_location("choose_defaults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study(path, tables, metric="ndcg"):
    models = {
        name: {"params": rows[0][0], "table": [{"number": i, "params": p, "score": s} for i, (p, s) in enumerate(rows)]}
        for name, rows in tables.items()
    }
    path.write_text(json.dumps({"metric": metric, "k": 20, "models": models}))
    return str(path)


def test_best_mean_over_settings_tried_everywhere_epochs_from_the_first_file(tmp_path, capsys):
    small = study(tmp_path / "small.json", {
        "dssm": [({"lr": 1, "epochs": 7}, 0.05), ({"lr": 2, "epochs": 3}, 0.06), ({"lr": 3, "epochs": 4}, 0.9)],
        "merged": [({"weights": [1, 1], "channels": ["a", "b"]}, 0.1)],
    })
    large = study(tmp_path / "large.json", {
        # lr 2 wins on the mean although lr 1 wins here; lr 3 was never tried on this data set.
        "dssm": [({"lr": 1, "epochs": 9}, 0.12), ({"lr": 2, "epochs": 12}, 0.115), ({"lr": 4, "epochs": 4}, 0.5)],
        "merged": [({"weights": [1, 1], "channels": ["a", "b"]}, 0.2)],
    })
    assert load_script().main([small, large]) == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1]) == {"dssm": {"lr": 2, "epochs": 3}}
    assert any(line.startswith("merged: skipped") for line in out)
    assert "trial 2: mean 0.0875" in "\n".join(out)


def test_files_scoring_different_metrics_are_refused(tmp_path, capsys):
    first = study(tmp_path / "a.json", {"m": [({"x": 1}, 0.1)]})
    second = study(tmp_path / "b.json", {"m": [({"x": 1}, 0.1)]}, metric="recall")
    assert load_script().main([first, second]) == 2
    assert "different metrics" in capsys.readouterr().err
