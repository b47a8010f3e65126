"""spark-submit jobs/tune.py --config jobs/conf/<file>.yaml [--set key=value ...]: tune the configured models on the validation split carved from split/train (run prepare first); writes tuning/tuned.json and tuning.png."""

import sys

try:
    from spark_retrieval.jobs import main
except ModuleNotFoundError as error:
    if error.name != "spark_retrieval":
        raise
    print("error: spark_retrieval is not importable: pass --py-files dist/spark_retrieval.zip to spark-submit "
          "(built by scripts/build_pyfiles.sh) or install the package into this Python", file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(main("tune"))
