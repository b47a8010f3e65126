"""spark-submit jobs/prepare.py --config jobs/conf/<file>.yaml [--set key=value ...]: load the dataset, split it, write split/train and split/test parquet."""

import sys

from spark_retrieval.jobs import main

if __name__ == "__main__":
    sys.exit(main("prepare"))
