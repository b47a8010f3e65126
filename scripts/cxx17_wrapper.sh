#!/usr/bin/env bash
# C++ compiler wrapper used by scripts/install_horovod.sh.
#
# Horovod 0.28.1's CMake forces -std=c++14 (and -std=c++11 in places), but
# torch >= 2.1 headers require C++17. This wrapper rewrites those flags to
# -std=c++17 and then execs the real compiler (HVD_REAL_CXX, default g++).
set -euo pipefail
real_cxx="${HVD_REAL_CXX:-g++}"
args=()
for a in "$@"; do
  case "$a" in
    -std=c++11|-std=c++14|-std=gnu++11|-std=gnu++14) args+=("-std=c++17") ;;
    *) args+=("$a") ;;
  esac
done
exec "$real_cxx" "${args[@]}"
