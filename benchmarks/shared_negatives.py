"""Negatives per example or shared by the batch: validation score, best epoch and time of each sampled-negative row.

    python benchmarks/shared_negatives.py --dataset ml-latest-small
    python benchmarks/shared_negatives.py --dataset ml-100k --data-dir ../shared/data/ml-100k

For each row (default: every two-tower row that trains on sampled negatives) and each ``negative_sampling``,
one ``spark-retrieval tune`` trial at the row's own settings with only ``negative_sampling`` changed: the
benchmark's temporal split, then the validation split carved from its train; the row trains up to
``--max-epochs`` epochs and keeps its best epoch on the validation queries (NDCG@20). The test set is never
read. Appends one record per (row, sampling) to ``benchmarks/results/shared_negatives.jsonl``: validation
score, best epoch, the trial's seconds (example building, training, validation and recommending included) and
the whole call's.
"""

from __future__ import annotations

import argparse
import itertools
import time

import _harness  # noqa: F401  (sets the Spark environment variables before pyspark starts)
from _harness import record

from spark_retrieval.benchmark import open_data
from spark_retrieval.data.split import temporal_split
from spark_retrieval.models.two_tower.losses import NEGATIVE_SAMPLING
from spark_retrieval.session import get_spark
from spark_retrieval.tuning import tune

ROWS = "dssm_bce_neg10,dssm_bce_neg100,simplex_ccl"


def grid(options: list[str]) -> list[dict[str, float]]:
    """``["learning_rate=0.001,0.003", "temperature=0.1"]`` → every combination; none: one empty setting."""
    settings = [{}]
    for option in options:
        key, _, values = option.partition("=")
        settings = [{**s, key: float(v)} for s in settings for v in values.split(",")]
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--data-dir", help="the dataset's folder (the bundled ml-latest-small needs none)")
    parser.add_argument("--models", default=ROWS)
    parser.add_argument("--sampling", default=",".join(NEGATIVE_SAMPLING))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                        help="also try these values of a row setting (numbers; repeat for a grid of every combination)")
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    spark = get_spark(master=args.master)
    data = open_data(spark, dataset=args.dataset, path=args.data_dir)
    train = temporal_split(data.ratings, positive_threshold=data.positive_threshold).train.cache()
    runs = itertools.product(args.models.split(","), args.sampling.split(","), grid(args.set))
    for model, sampling, setting in runs:
        started = time.perf_counter()
        result = tune(
            train, [model], trials=1, positive_threshold=data.positive_threshold, seed=args.seed,
            fixed={model: {"negative_sampling": sampling, **setting}}, side=data.side,
            max_epochs=args.max_epochs, patience=args.patience,
        )
        tuned = result.models[model]
        row = {
            "dataset": args.dataset,
            "model": model,
            "negative_sampling": sampling,
            "changed": setting,
            "validation_ndcg_at_20": round(tuned.score, 6),
            "best_epoch": tuned.params.get("epochs"),
            "trial_seconds": round(tuned.table[0]["seconds"], 1),
            "seconds": round(time.perf_counter() - started, 1),
            "max_epochs": args.max_epochs,
            "patience": args.patience,
            "seed": args.seed,
        }
        print(row, flush=True)
        record("shared_negatives", row)
    spark.stop()


if __name__ == "__main__":
    main()
