"""spark-submit jobs/evaluate.py --config jobs/conf/<file>.yaml [--set key=value ...]: evaluate the saved model on split/test and write metrics/<name>.json."""

import sys

from spark_retrieval.jobs import main

if __name__ == "__main__":
    sys.exit(main("evaluate"))
