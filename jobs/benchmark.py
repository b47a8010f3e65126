"""spark-submit jobs/benchmark.py --config jobs/conf/<file>.yaml [--set key=value ...]: the whole benchmark table, written to benchmark/results.{md,json,png}."""

import sys

from spark_retrieval.jobs import main

if __name__ == "__main__":
    sys.exit(main("benchmark"))
