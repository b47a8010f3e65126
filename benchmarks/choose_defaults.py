"""Pick each model's shipped settings from validation: the best mean score over several ``tuned.json`` files.

    python benchmarks/choose_defaults.py tuning-small/tuned.json tuning-100k/tuned.json

With one seed, ``spark-retrieval tune`` tries the same settings on every data set (trial 1 = the row's own
settings, the next ones TPE's seeded random start), so each setting tried everywhere has one validation score
per data set. For every model this prints those settings with their scores and their mean, best mean first.
``epochs`` is not part of a setting: a two-tower trial picks its own best epoch on each data set's validation;
the epoch shown is the first file's (pass the bundled data set first). Test metrics are never read.
Merged rows are skipped: their weights are tuned for the channels their run chose.
Last line: one JSON object, model → the best setting (with the first file's epoch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _key(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "epochs"}, sort_keys=True)


def scored_everywhere(studies: list[dict], model: str) -> list[dict]:
    """The settings of ``model`` tried in every study: params (epochs from the first), scores, mean."""
    tables = [{_key(t["params"]): t for t in study["models"][model]["table"]} for study in studies]
    rows = []
    for key, first in tables[0].items():
        if all(key in table for table in tables[1:]):
            scores = [table[key]["score"] for table in tables]
            rows.append({"params": first["params"], "scores": scores, "mean": sum(scores) / len(scores),
                         "trial": first["number"] + 1})
    return sorted(rows, key=lambda row: -row["mean"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tuned", nargs="+", help="tuned.json files of runs with the same seed (bundled data set first)")
    args = parser.parse_args(argv)
    studies = [json.loads(Path(path).read_text()) for path in args.tuned]
    metrics = {(s["metric"], s["k"]) for s in studies}
    if len(metrics) != 1:
        print(f"choose_defaults: the files score different metrics: {sorted(metrics)}", file=sys.stderr)
        return 2
    chosen = {}
    for model in studies[0]["models"]:
        if not all(model in s["models"] for s in studies):
            continue
        if any("channels" in s["models"][model]["params"] for s in studies):
            print(f"{model}: skipped (a merged row's tuned weights belong to the channels chosen in its run)")
            continue
        rows = scored_everywhere(studies, model)
        print(f"{model}: {len(rows)} setting(s) scored on all {len(studies)} data sets")
        for row in rows:
            scores = " ".join(f"{s:.4f}" for s in row["scores"])
            print(f"  trial {row['trial']}: mean {row['mean']:.4f} ({scores})  {json.dumps(row['params'], sort_keys=True)}")
        if rows:
            chosen[model] = rows[0]["params"]
    print(json.dumps(chosen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
