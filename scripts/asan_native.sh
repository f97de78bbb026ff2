#!/usr/bin/env bash
# The C core's property tests (tests/test_native.py) against a build with AddressSanitizer and
# UndefinedBehaviorSanitizer: any out-of-bounds access, use after free or undefined behaviour in
# supervisor/_daemon/output/_native.c aborts the run. About 30 s. Usage: scripts/asan_native.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
cc=${CC:-cc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
so="$out/_native$suffix"
# Compiled directly (not through setup.py, whose optional build would hide an error).
"$cc" -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
  -I"$inc" supervisor/_daemon/output/_native.c -o "$so"
# The installed build is the one that runs (setup.py's optional build would hide a compile error).
SUPD_REQUIRE_NATIVE=1 "$py" -m pytest -q -p no:cacheprovider tests/test_native.py -k core_is_active
# Python itself is not instrumented: the sanitizer runtime is preloaded, and Python's allocator is plain malloc
# so that every bytes object gets the sanitizer's red zones.
# Twice: with the AVX2 newline count where the CPU has it, then with the SSE2 one.
for no_avx2 in "" 1; do
  LD_PRELOAD="$("$cc" -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc \
    SUPD_NATIVE_SO="$so" SUPD_NATIVE_NO_AVX2="$no_avx2" NATIVE_CASES="${NATIVE_CASES:-400}" \
    "$py" -m pytest -q -s -p no:cacheprovider tests/test_native.py  # -s: a sanitizer report is shown, not captured
done
