#!/usr/bin/env bash
# EMR bootstrap action: install spark-retrieval on every node, with the pinned stack, torch (CPU) and Horovod,
# using the same scripts as `make run` and the Docker image.
#
# Usage: bootstrap.sh [--dry-run] [--prefix DIR] ARTIFACTS
#   ARTIFACTS   where scripts/package_artifacts.sh's folder was copied: s3://BUCKET/spark-retrieval, or a local folder
#   --prefix    install root (default /opt/spark-retrieval): PREFIX/venv is the Python the steps run
#               (spark.pyspark.python=PREFIX/venv/bin/python in docker/emr/steps.json)
#   --dry-run   change nothing: check a local ARTIFACTS folder and print every command that would run
#
# Environment (optional):
#   PYTHON           interpreter the venv is made from (default python3.11; installed with the system packages
#                    when missing)
#   TORCH_INDEX_URL  extra package index for torch's CPU build (default https://download.pytorch.org/whl/cpu;
#                    empty: none, torch then comes from the default index)
#   HVD_WHEEL_CACHE  where the Horovod wheel is built and cached (default PREFIX/cache/wheels)
#
# Steps: fetch ARTIFACTS → PREFIX/artifacts; scripts/install_system_packages.sh (g++, make, cmake, procps, Python
# headers — with sudo dnf on EMR); a venv; pip install -c constraints.txt of the wheel with its torch extra and
# Horovod's runtime dependencies; scripts/install_horovod.sh; an import check.
set -euo pipefail

say() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

DRY_RUN=0
PREFIX=/opt/spark-retrieval
ARTIFACTS=
while [ "$#" -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --prefix) [ "$#" -ge 2 ] || die "--prefix needs a directory"; PREFIX="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option: $1" ;;
    *) [ -z "$ARTIFACTS" ] || die "one ARTIFACTS location only (got $ARTIFACTS and $1)"; ARTIFACTS="$1" ;;
  esac
  shift
done
[ -n "$ARTIFACTS" ] || die "usage: $0 [--dry-run] [--prefix DIR] ARTIFACTS (s3://BUCKET/spark-retrieval or a folder)"
ARTIFACTS="${ARTIFACTS%/}"
PYTHON="${PYTHON:-python3.11}"
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
HVD_WHEEL_CACHE="${HVD_WHEEL_CACHE:-$PREFIX/cache/wheels}"
LOCAL="$PREFIX/artifacts"
VENV="$PREFIX/venv"
VENV_PY="$VENV/bin/python"

run() {  # print the command; run it unless --dry-run
  printf '+ %s\n' "$*"
  [ "$DRY_RUN" = 1 ] || "$@"
}

# ------------------------------------------------------------------ 1. fetch the artifacts
case "$ARTIFACTS" in
  s3://*) fetch=(aws s3 cp --recursive --only-show-errors "$ARTIFACTS" "$LOCAL"); SOURCE="$ARTIFACTS" ;;
  *://*) die "ARTIFACTS must be an s3:// URI or a local folder, got $ARTIFACTS" ;;
  *)
    [ -d "$ARTIFACTS" ] || die "artifacts folder not found: $ARTIFACTS"
    SOURCE="$(cd "$ARTIFACTS" && pwd)"
    fetch=(cp -R "$SOURCE/." "$LOCAL/")
    ;;
esac
if [ "$DRY_RUN" = 1 ] && [ "${SOURCE#s3://}" = "$SOURCE" ]; then
  CHECK="$SOURCE"  # a local folder can be checked without copying it
else
  CHECK="$LOCAL"
fi

if [ ! -d "$PREFIX" ] || [ ! -w "$PREFIX" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    run mkdir -p "$PREFIX"
  else  # EMR runs bootstrap actions as the hadoop user, with passwordless sudo
    run sudo mkdir -p "$PREFIX"
    run sudo chown "$(id -u):$(id -g)" "$PREFIX"
  fi
fi
run mkdir -p "$LOCAL"
say "fetching $SOURCE"
run "${fetch[@]}"

if [ "$DRY_RUN" = 0 ] || [ "$CHECK" = "$SOURCE" ]; then
  for needed in constraints.txt scripts/install_system_packages.sh scripts/install_horovod.sh scripts/cxx17_wrapper.sh; do
    [ -f "$CHECK/$needed" ] || die "$SOURCE has no $needed: lay it out with scripts/package_artifacts.sh"
  done
  WHEEL_NAME="$(cd "$CHECK" && ls spark_retrieval-*.whl 2>/dev/null | sort | tail -n 1)"
  [ -n "$WHEEL_NAME" ] || die "$SOURCE has no spark_retrieval-*.whl: lay it out with scripts/package_artifacts.sh"
else
  WHEEL_NAME="spark_retrieval-<version>-py3-none-any.whl"
fi
WHEEL="$LOCAL/$WHEEL_NAME"

# ------------------------------------------------------------------ 2. system packages
if [ "$DRY_RUN" = 1 ]; then
  if [ -f "$CHECK/scripts/install_system_packages.sh" ]; then
    say "system packages (the script's own dry run):"
    PYTHON="$PYTHON" bash "$CHECK/scripts/install_system_packages.sh" --dry-run || true
  fi
  printf '+ PYTHON=%s bash %s\n' "$PYTHON" "$LOCAL/scripts/install_system_packages.sh"
else
  PYTHON="$PYTHON" bash "$LOCAL/scripts/install_system_packages.sh"
fi

# ------------------------------------------------------------------ 3. the venv and the pinned stack
PIP_INDEX=()
[ -z "$TORCH_INDEX_URL" ] || PIP_INDEX=(--extra-index-url "$TORCH_INDEX_URL")
[ -x "$VENV_PY" ] || run "$PYTHON" -m venv "$VENV"
run "$VENV_PY" -m pip install -q --disable-pip-version-check -c "$LOCAL/constraints.txt" --upgrade pip wheel setuptools
run "$VENV_PY" -m pip install -q --disable-pip-version-check -c "$LOCAL/constraints.txt" "${PIP_INDEX[@]}" "$WHEEL[torch]"
# Horovod's runtime dependencies, pinned like everything else (as scripts/setup.sh does).
run "$VENV_PY" -m pip install -q --disable-pip-version-check -c "$LOCAL/constraints.txt" cloudpickle psutil cffi packaging pyyaml

# ------------------------------------------------------------------ 4. Horovod, then a check
if [ "$DRY_RUN" = 1 ]; then
  printf '+ HVD_WHEEL_CACHE=%s bash %s %s\n' "$HVD_WHEEL_CACHE" "$LOCAL/scripts/install_horovod.sh" "$VENV_PY"
else
  HVD_WHEEL_CACHE="$HVD_WHEEL_CACHE" bash "$LOCAL/scripts/install_horovod.sh" "$VENV_PY"
fi
run "$VENV_PY" -c "import spark_retrieval, pyspark, torch, horovod, horovod.torch as hvd; assert hvd.gloo_built(); print('[bootstrap] spark-retrieval', spark_retrieval.__version__, '| pyspark', pyspark.__version__, '| torch', torch.__version__, '| horovod', horovod.__version__)"
if [ "$DRY_RUN" = 1 ]; then
  say "dry run: nothing was changed"
else
  say "done: steps run $VENV_PY (spark.pyspark.python)"
fi
