#!/usr/bin/env bash
# Sets up everything spark-retrieval needs on a fresh machine, idempotently:
# Java 17 (apt-get, only when `java` is missing), .venv/ with the pinned stack, torch (CPU) and Horovod.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

if ! command -v java >/dev/null 2>&1; then
  say "java not found: installing openjdk-17-jre-headless with apt-get"
  if [ "$(id -u)" -ne 0 ]; then
    echo "[setup] Java 17 is required: install openjdk-17-jre-headless (needs root)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

say "installing spark-retrieval and its pinned dependencies"
.venv/bin/python -m pip install -q -c constraints.txt --upgrade pip wheel setuptools
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,torch]"
.venv/bin/python -c "import spark_retrieval, pyspark, torch" || { echo "[setup] install failed" >&2; exit 1; }

if [ "${SPARK_RETRIEVAL_SKIP_HOROVOD:-0}" != "1" ]; then
  # Horovod's runtime dependencies, pinned like everything else, so its build script finds them present.
  .venv/bin/python -m pip install -q -c constraints.txt cloudpickle psutil cffi packaging pyyaml
  bash scripts/install_horovod.sh .venv/bin/python
fi
touch .venv/.installed
say "done"
