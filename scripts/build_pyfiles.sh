#!/usr/bin/env bash
# Build dist/spark_retrieval.zip: the spark_retrieval package (code + package data) as one archive to ship
# to executors with `spark-submit --py-files dist/spark_retrieval.zip`. Only this library goes in it; the
# executors' Python needs the dependencies from setup.py (pyarrow, numpy, pandas, scipy, pyyaml, ...).
#
#   scripts/build_pyfiles.sh [OUTPUT.zip]     default: dist/spark_retrieval.zip (relative to the repo root)
#
# The archive is reproducible: entries sorted, fixed timestamps, no __pycache__ or *.pyc.
set -euo pipefail
cd "$(dirname "$0")/.."
output=${1:-dist/spark_retrieval.zip}
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
mkdir -p "$(dirname "$output")"
"$python" - "$output" <<'PY'
import os
import sys
import zipfile

output = sys.argv[1]
entries = []
for root, dirs, files in os.walk("spark_retrieval"):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
    entries += [os.path.join(root, name) for name in files if not name.endswith((".pyc", ".pyo"))]
partial = output + ".partial"
with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
    for path in sorted(entries):
        info = zipfile.ZipInfo(path.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with open(path, "rb") as source:
            archive.writestr(info, source.read())
os.replace(partial, output)  # readers never see a half-written archive
print(f"{output}: {len(entries)} files, {os.path.getsize(output)} bytes")
PY
