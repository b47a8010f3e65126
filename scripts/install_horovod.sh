#!/usr/bin/env bash
# Build and install Horovod (PyTorch + Gloo, CPU, no MPI/TF/MXNet) into a venv.
#
# Usage: scripts/install_horovod.sh [PYTHON]
#   PYTHON  interpreter of the target venv (default: <repo>/.venv/bin/python).
#           torch must already be installed in it.
#
# Environment knobs (all optional):
#   HVD_VERSION           horovod version to install        (default 0.28.1)
#   HVD_WHEEL_CACHE       wheel cache root  (default ${XDG_CACHE_HOME:-$HOME/.cache}/spark-retrieval/wheels)
#   HVD_FORCE_REBUILD=1   ignore any cached wheel and rebuild it
#   HVD_BUILD_JOBS        parallel compile jobs             (default: nproc)
#
# Behaviour:
#   * no-op (one python start, ~2 s) when horovod.torch already imports with
#     the wanted version and Gloo built;
#   * otherwise installs the wheel cached for (horovod, torch, python, arch) if
#     there is one, else builds it once (a few minutes) with
#     `pip wheel --no-build-isolation --no-deps` into the cache and installs it.
#
# Why the compiler wrapper: horovod 0.28.1's CMake asks for -std=c++14 but
# torch >= 2.1 headers need C++17; scripts/cxx17_wrapper.sh rewrites the flag.
set -euo pipefail

HVD_VERSION="${HVD_VERSION:-0.28.1}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
WRAPPER="$SCRIPT_DIR/cxx17_wrapper.sh"

step() { printf '[install_horovod] %s\n' "$*"; }
die()  { printf '[install_horovod] ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
  -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[ "$#" -le 1 ] || die "usage: $0 [PYTHON]"

PY="${1:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "python interpreter not found: $PY (create the venv first, e.g. python3 -m venv .venv)"

# ---------------------------------------------------------------- 1. no-op check
check_installed() {
  "$PY" - "$HVD_VERSION" >/dev/null 2>&1 <<'PYEOF'
import sys
import horovod
import horovod.torch as hvd
sys.exit(0 if horovod.__version__ == sys.argv[1] and hvd.gloo_built() else 1)
PYEOF
}
if check_installed; then
  step "horovod $HVD_VERSION (torch, gloo) already installed for $PY - nothing to do"
  exit 0
fi

# ---------------------------------------------------------------- 2. prerequisites
step "checking prerequisites"
PYINFO="$("$PY" - 2>/dev/null <<'PYEOF'
import platform, sys
import torch
print("%s cp%d%d %s" % (torch.__version__, sys.version_info[0], sys.version_info[1], platform.machine()))
PYEOF
)" || die "torch is not importable with $PY - install it first (e.g. $PY -m pip install torch==2.13.0)"
read -r TORCH_VERSION PY_TAG ARCH <<<"$PYINFO"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip is not available in $PY (run: $PY -m ensurepip --upgrade)"
step "python $PY_TAG, torch $TORCH_VERSION, $ARCH"

# System cmake (>= 3.13) is preferred over pip's cmake 4.x, which cannot
# configure horovod's bundled third-party CMake files.
find_system_cmake() {
  local c
  for c in /usr/bin/cmake /usr/local/bin/cmake; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
missing=()
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
find_system_cmake >/dev/null || missing+=(cmake)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing ${missing[*]} via apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  else
    die "missing build tools: ${missing[*]} - install them first (e.g. sudo apt-get install -y ${missing[*]})"
  fi
fi
CMAKE_BIN="$(find_system_cmake)" || die "no system cmake found in /usr/bin or /usr/local/bin"
CMAKE_VER="$("$CMAKE_BIN" --version | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')"
GXX_BIN="$(command -v g++)"
step "g++ $("$GXX_BIN" -dumpfullversion 2>/dev/null || "$GXX_BIN" -dumpversion), cmake $CMAKE_VER ($CMAKE_BIN)"
[ -x "$WRAPPER" ] || chmod +x "$WRAPPER" 2>/dev/null || die "compiler wrapper not executable: $WRAPPER"

# ---------------------------------------------------------------- 3. runtime deps
# pip_ensure MODULE=REQUIREMENT...: pip-installs only the requirements whose module
# is not importable (no network access at all when everything is present).
pip_ensure() {
  local pair mods=() reqs=() missing_reqs=()
  for pair in "$@"; do mods+=("${pair%%=*}"); reqs+=("${pair#*=}"); done
  local idx
  for idx in $("$PY" - "${mods[@]}" <<'PYEOF'
import importlib.util, sys
print(" ".join(str(i) for i, m in enumerate(sys.argv[1:]) if importlib.util.find_spec(m) is None))
PYEOF
  ); do missing_reqs+=("${reqs[$idx]}"); done
  [ "${#missing_reqs[@]}" -gt 0 ] || return 0
  step "pip installing ${missing_reqs[*]}"
  "$PY" -m pip install --disable-pip-version-check "${missing_reqs[@]}" >"$CACHE_DIR/pip-deps.log" 2>&1 \
    || { tail -n 20 "$CACHE_DIR/pip-deps.log" >&2; die "pip install ${missing_reqs[*]} failed"; }
}

# ---------------------------------------------------------------- 4. wheel cache
CACHE_ROOT="${HVD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spark-retrieval/wheels}"
CACHE_DIR="$CACHE_ROOT/horovod-$HVD_VERSION/torch-$TORCH_VERSION-$PY_TAG-$ARCH"
mkdir -p "$CACHE_DIR" || die "cannot create wheel cache dir $CACHE_DIR"
LOG="$CACHE_DIR/build.log"

# Serialise concurrent runs sharing the cache (best effort).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_DIR/.lock"
  flock 9
  if check_installed; then  # another run may have finished meanwhile
    step "horovod $HVD_VERSION already installed (by a concurrent run) - nothing to do"
    exit 0
  fi
fi

# horovod's install_requires (cffi is added by its setup.py when torch is enabled).
step "checking horovod runtime deps (cloudpickle psutil pyyaml packaging cffi)"
pip_ensure cloudpickle=cloudpickle psutil=psutil yaml=pyyaml packaging=packaging 'cffi=cffi>=1.4.0'

find_wheel() {
  local w
  for w in "$CACHE_DIR"/horovod-"$HVD_VERSION"-*.whl; do
    [ -f "$w" ] && { echo "$w"; return 0; }
  done
  return 0
}

build_wheel() {
  local tmp bindir start
  pip_ensure setuptools=setuptools wheel=wheel  # needed with --no-build-isolation
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/hvd-build.XXXXXX")"
  bindir="$tmp/bin"
  mkdir -p "$bindir" "$tmp/wheel"
  # Put the system cmake first on PATH so no pip-installed cmake shadows it.
  ln -s "$CMAKE_BIN" "$bindir/cmake"
  step "building horovod $HVD_VERSION wheel (takes a few minutes; log: $LOG)"
  start=$(date +%s)
  if ! env -u HOROVOD_GPU -u HOROVOD_GPU_OPERATIONS -u HOROVOD_GPU_ALLREDUCE \
      -u HOROVOD_GPU_BROADCAST -u HOROVOD_GPU_ALLGATHER -u HOROVOD_WITH_MPI \
      -u HOROVOD_WITH_TENSORFLOW -u HOROVOD_WITH_MXNET -u HOROVOD_WITHOUT_GLOO \
      -u HOROVOD_WITHOUT_PYTORCH -u HOROVOD_SKIP_COMPILE -u HOROVOD_LOCAL_VERSION \
      PATH="$bindir:$PATH" \
      CXX="$WRAPPER" HVD_REAL_CXX="$GXX_BIN" \
      CC="${CC:-$(command -v gcc || echo cc)}" \
      MAKEFLAGS="-j${HVD_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}" \
      CMAKE_POLICY_VERSION_MINIMUM=3.5 \
      HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 HOROVOD_CPU_OPERATIONS=GLOO \
      "$PY" -m pip wheel -v --disable-pip-version-check --no-cache-dir \
        --no-build-isolation --no-deps -w "$tmp/wheel" "horovod==$HVD_VERSION" \
      >"$LOG" 2>&1; then
    rm -rf "$tmp"
    printf '[install_horovod] build failed; last lines of %s:\n' "$LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
  local built
  built="$(find "$tmp/wheel" -maxdepth 1 -name 'horovod-*.whl' -print -quit)"
  [ -n "$built" ] || { rm -rf "$tmp"; die "pip wheel succeeded but produced no wheel (see $LOG)"; }
  mv -f "$built" "$CACHE_DIR/" || { rm -rf "$tmp"; die "cannot move wheel into $CACHE_DIR"; }
  rm -rf "$tmp"
  step "built $(basename "$built") in $(( $(date +%s) - start ))s, cached in $CACHE_DIR"
}

install_wheel() {
  step "installing $(basename "$1")"
  "$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$1" \
    >"$CACHE_DIR/install.log" 2>&1 || { tail -n 40 "$CACHE_DIR/install.log" >&2; die "pip install of $1 failed"; }
}

verify() {  # prints one summary line on stdout; python's stderr goes to verify.log
  "$PY" - "$HVD_VERSION" 2>"$CACHE_DIR/verify.log" <<'PYEOF'
import sys
import horovod
import horovod.torch as hvd
assert horovod.__version__ == sys.argv[1], horovod.__version__
assert hvd.gloo_built(), "gloo not built"
print("horovod %s torch-ext ok, gloo_built=%s, mpi_built=%s" % (horovod.__version__, hvd.gloo_built(), hvd.mpi_built()))
PYEOF
}

WHEEL="$(find_wheel)"
if [ -n "$WHEEL" ] && [ "${HVD_FORCE_REBUILD:-0}" != 1 ]; then
  step "using cached wheel $WHEEL"
  install_wheel "$WHEEL"
  if out="$(verify)"; then
    step "$out"
    exit 0
  fi
  step "cached wheel does not work ($(tail -n 1 "$CACHE_DIR/verify.log")); discarding it and rebuilding"
  rm -f "$WHEEL"
else
  rm -f "$CACHE_DIR"/horovod-"$HVD_VERSION"-*.whl
fi

build_wheel
WHEEL="$(find_wheel)"
install_wheel "$WHEEL"
out="$(verify)" || { tail -n 20 "$CACHE_DIR/verify.log" >&2; die "horovod installed but verification failed"; }
step "$out"
