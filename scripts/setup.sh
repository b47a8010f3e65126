#!/usr/bin/env bash
# Sets up everything spark-retrieval needs on a fresh machine, idempotently:
# the system packages (scripts/install_system_packages.sh: Java 17, a C++ compiler, cmake, OpenBLAS, …, only what is
# missing), .venv/ with the pinned stack, torch (CPU) and Horovod.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

if ! missing="$(bash scripts/install_system_packages.sh --check)"; then
  if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
    bash scripts/install_system_packages.sh
  elif ! command -v java >/dev/null 2>&1; then
    echo "[setup] Java 17 is required: run scripts/install_system_packages.sh as root ($missing)" >&2
    exit 1
  else
    say "warning: ${missing#\[system-packages\] } — run scripts/install_system_packages.sh as root (without OpenBLAS, ALS uses Java loops)"
  fi
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
