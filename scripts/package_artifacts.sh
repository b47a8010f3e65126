#!/usr/bin/env bash
# Lay out what a cluster needs in one folder, to be copied to S3 as is (docker/README.md, "EMR"):
#
#   OUT/spark_retrieval-<version>-py3-none-any.whl   the library (pip wheel of this checkout, no dependencies)
#   OUT/constraints.txt                              the pinned versions every install uses
#   OUT/scripts/{install_system_packages,install_horovod,cxx17_wrapper}.sh   what emr/bootstrap.sh calls
#   OUT/emr/bootstrap.sh                             the EMR bootstrap action
#   OUT/jobs/*.py, OUT/jobs/conf/*.yaml              the spark-submit entry points and their configs
#
# Usage: scripts/package_artifacts.sh OUT [PYTHON]
#   PYTHON  builds the wheel (default: <repo>/.venv/bin/python; needs setuptools and wheel, no network)
# Then: aws s3 sync OUT s3://$BUCKET/spark-retrieval/
set -euo pipefail

die() { printf '[package] ERROR: %s\n' "$*" >&2; exit 1; }
[ "$#" -ge 1 ] && [ "$#" -le 2 ] || die "usage: $0 OUT [PYTHON]"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$1"
PY="${2:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "python not found: $PY"

mkdir -p "$OUT/scripts" "$OUT/emr" "$OUT/jobs/conf"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/spark_retrieval-*.whl

# Build from a copy, so the checkout gets no build/ folder.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/spark-retrieval-package.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp -R "$REPO/setup.py" "$REPO/README.md" "$REPO/spark_retrieval" "$tmp/"
find "$tmp/spark_retrieval" -name __pycache__ -prune -exec rm -rf {} +
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$tmp" >"$tmp/wheel.log" 2>&1 \
  || { tail -n 20 "$tmp/wheel.log" >&2; die "pip wheel failed"; }

cp "$REPO/constraints.txt" "$OUT/"
cp "$REPO/scripts/install_system_packages.sh" "$REPO/scripts/install_horovod.sh" "$REPO/scripts/cxx17_wrapper.sh" "$OUT/scripts/"
cp "$REPO/docker/emr/bootstrap.sh" "$OUT/emr/"
cp "$REPO"/jobs/*.py "$OUT/jobs/"
cp "$REPO"/jobs/conf/*.yaml "$OUT/jobs/conf/"
chmod +x "$OUT"/scripts/*.sh "$OUT/emr/bootstrap.sh"
printf '[package] %s\n' "$(cd "$OUT" && ls spark_retrieval-*.whl) and the scripts, jobs and configs are in $OUT"
