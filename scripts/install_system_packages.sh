#!/usr/bin/env bash
# Install the operating-system packages spark-retrieval needs, idempotently: only what is missing.
#
# Usage: scripts/install_system_packages.sh [--check | --dry-run]
#   (no option)  install whatever is missing with apt-get (Debian/Ubuntu) or dnf/yum (Amazon Linux, as on EMR),
#                through sudo when not root; prints "nothing to do" and touches nothing when all is present
#   --check      install nothing; exit 0 when everything is present, 1 (listing what is missing) otherwise
#   --dry-run    install nothing; print the package-manager command that would run
#
# What is needed, and the command that shows it present:
#   Java 17+        java            Spark's JVM (skipped when any `java` is on PATH: EMR and CI bring their own)
#   C++ compiler    g++             Horovod is built from source (scripts/install_horovod.sh)
#   make, cmake     make, cmake     the same build; cmake must be the system one (/usr/bin or /usr/local/bin)
#   procps          ps              Spark's launch scripts and Horovod's process handling call ps
#   Python headers  Python.h        the Horovod build compiles against $PYTHON (default python3)
#   Python, venv    $PYTHON         when PYTHON=pythonX.Y is not installed, or cannot make venvs (Debian's -venv)
#   OpenBLAS        libopenblas.so.0  native BLAS/LAPACK for Spark MLlib (ALS); without it MLlib falls back to
#                                   Java loops and prints `dlopen(libblas.so.3) failed`. The single-threaded
#                                   build (Debian's libopenblas0-serial, which also becomes libblas.so.3 and
#                                   liblapack.so.3, the names MLlib loads): Spark already runs one task per core.
#
# Environment: PYTHON (interpreter whose headers are needed, default python3); CMAKE_DIRS (where a system
# cmake is looked for, default "/usr/bin /usr/local/bin") and LIBRARY_DIRS (where libopenblas.so.0 is looked
# for); tests point them elsewhere to see the install path.
set -euo pipefail

say() { printf '[system-packages] %s\n' "$*"; }
die() { printf '[system-packages] ERROR: %s\n' "$*" >&2; exit 1; }

MODE=install
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  --dry-run) MODE=dry-run ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) die "unknown option: $1 (use --check, --dry-run or nothing)" ;;
esac
[ "$#" -le 1 ] || die "one option at most"

PYTHON="${PYTHON:-python3}"
CMAKE_DIRS="${CMAKE_DIRS:-/usr/bin /usr/local/bin}"
LIBRARY_DIRS="${LIBRARY_DIRS:-/usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib /usr/local/lib}"

if command -v apt-get >/dev/null 2>&1; then
  MANAGER=apt-get
elif command -v dnf >/dev/null 2>&1; then
  MANAGER=dnf
elif command -v yum >/dev/null 2>&1; then
  MANAGER=yum
else
  MANAGER=none
fi

python_version() {  # X.Y of $PYTHON, from the interpreter or else from its name (python3.11)
  "$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null \
    || { [[ "${PYTHON##*/}" =~ ^python([0-9]+\.[0-9]+)$ ]] && echo "${BASH_REMATCH[1]}"; }
}

has_python_headers() {
  "$PYTHON" - 2>/dev/null <<'PYEOF'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PYEOF
}

in_any_dir() {  # in_any_dir TEST NAME DIR...: whether `[ TEST DIR/NAME ]` holds in one of the DIRs
  local test="$1" name="$2" dir
  shift 2
  for dir in "$@"; do
    [ "$test" "$dir/$name" ] && return 0
  done
  return 1
}

# shellcheck disable=SC2086  # the lists of folders split on spaces
has_openblas() { in_any_dir -e libopenblas.so.0 $LIBRARY_DIRS; }
# shellcheck disable=SC2086
has_system_cmake() { in_any_dir -x cmake $CMAKE_DIRS; }

# package <need>: the package that brings it, under this machine's package manager.
package() {
  local pyver
  pyver="$(python_version || echo 3)"
  case "$MANAGER:$1" in
    apt-get:java) echo openjdk-17-jre-headless ;;
    apt-get:g++) echo g++ ;;
    apt-get:python) echo "python${pyver}" ;;
    apt-get:python-headers) echo "python${pyver}-dev" ;;
    apt-get:python-venv) echo "python${pyver}-venv" ;;
    apt-get:ps) echo procps ;;
    apt-get:openblas) echo libopenblas0-serial ;;
    dnf:java|yum:java) echo java-17-amazon-corretto-headless ;;
    dnf:g++|yum:g++) echo gcc-c++ ;;
    dnf:python|yum:python) echo "python${pyver}" ;;
    dnf:python-headers|yum:python-headers) echo "python${pyver}-devel" ;;
    dnf:python-venv|yum:python-venv) echo "python${pyver}" ;;
    dnf:ps|yum:ps) echo procps-ng ;;
    dnf:openblas|yum:openblas) echo openblas ;;  # libopenblas.so.0 is its serial build
    *) echo "$1" ;;  # make, cmake: same name everywhere
  esac
}

missing=()
command -v java >/dev/null 2>&1 || missing+=(java)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
has_system_cmake || missing+=(cmake)
command -v ps >/dev/null 2>&1 || missing+=(ps)
has_openblas || missing+=(openblas)
if command -v "$PYTHON" >/dev/null 2>&1; then
  has_python_headers || missing+=(python-headers)
  "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python-venv)
elif python_version >/dev/null; then
  missing+=(python python-headers)  # e.g. PYTHON=python3.11 on a node that has another Python only
  if [ "$MANAGER" = apt-get ]; then missing+=(python-venv); fi
else
  die "python interpreter not found: $PYTHON (set PYTHON=python3.X to have it installed)"
fi

if [ "${#missing[@]}" -eq 0 ]; then
  say "java, g++, make, cmake, ps, OpenBLAS, $PYTHON with its headers and venv are present: nothing to do"
  exit 0
fi

packages=()
for need in "${missing[@]}"; do packages+=("$(package "$need")"); done

case "$MANAGER" in
  apt-get) command=(apt-get install -y -qq --no-install-recommends "${packages[@]}"); update=(apt-get update -qq) ;;
  dnf|yum) command=("$MANAGER" install -y -q "${packages[@]}"); update=() ;;
  none) command=(); update=() ;;
esac

if [ "$MODE" = check ]; then
  say "missing: ${missing[*]} (packages: ${packages[*]})"
  exit 1
fi
[ "$MANAGER" != none ] || die "missing ${missing[*]} and no apt-get, dnf or yum to install them with"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if [ "$MODE" = install ] && ! command -v sudo >/dev/null 2>&1; then
    die "missing ${missing[*]}: run as root or install sudo (packages: ${packages[*]})"
  fi
  SUDO=(sudo)
fi

if [ "$MODE" = dry-run ]; then
  [ "${#update[@]}" -eq 0 ] || say "would run: ${SUDO[*]:+${SUDO[*]} }${update[*]}"
  say "would run: ${SUDO[*]:+${SUDO[*]} }${command[*]}"
  exit 0
fi

say "installing ${packages[*]} with $MANAGER"
if [ "$MANAGER" = apt-get ] && [[ " ${missing[*]} " == *" java "* ]]; then
  # Slim Debian images drop /usr/share/man, where the JDK's post-install step links its man pages.
  "${SUDO[@]}" mkdir -p /usr/share/man/man1
fi
if [ "${#update[@]}" -gt 0 ]; then
  "${SUDO[@]}" "${update[@]}" >/dev/null || die "${update[*]} failed"
fi
if [ "$MANAGER" = apt-get ]; then
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "${command[@]}" >/dev/null || die "${command[*]} failed"
else
  "${SUDO[@]}" "${command[@]}" >/dev/null || die "${command[*]} failed"
fi
say "installed ${packages[*]}"
