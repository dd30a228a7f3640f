#!/usr/bin/env bash
# Run the tests of the compiled code (service/_native.c, service/_shortest.h) against a
# build with AddressSanitizer and UndefinedBehaviorSanitizer, in a scratch copy of the
# tree (the work tree's own module is left alone). Any out-of-bounds access, leak of a
# freed buffer or undefined behaviour stops the run with a report.
#
#   scripts/check_native.sh            the CI profile of hypothesis (60 examples)
#   HYPOTHESIS_PROFILE=dev scripts/check_native.sh    600 examples per property (~2 min)
#
# Needs `make install` first (the venv, service/_gen) and gcc's sanitizer runtimes.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 tar -c | tar -x -C "$work"
cp -r service/_gen "$work/service/"
"$py" -c "import pathlib, hatch_build; hatch_build.write_tables(pathlib.Path('$work'))"
include=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
suffix=$("$py" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -fPIC -shared -Wall -Werror -I"$include" \
  "$work/service/_native.c" -o "$work/service/_native$suffix"
cd "$work"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 PYTHONPATH="$work"
"$OLDPWD/$py" -c "import service._native as m; assert m.__file__.startswith('$work'), m.__file__"
"$OLDPWD/$py" -m pytest -q -p no:cacheprovider tests/core/test_native.py \
  tests/core/test_native_decode.py tests/core/test_codec_properties.py tests/core/test_codec.py \
  tests/store/test_writebehind.py tests/store/test_table.py tests/store/test_l1.py \
  tests/store/test_coalesce.py tests/store/test_tiered.py
