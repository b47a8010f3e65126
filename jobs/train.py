"""spark-submit jobs/train.py --config jobs/conf/<file>.yaml [--set key=value ...]: fit the configured model on split/train and save it to models/<name>."""

import sys

from spark_retrieval.jobs import main

if __name__ == "__main__":
    sys.exit(main("train"))
