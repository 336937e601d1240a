#!/usr/bin/env bash
# docs/quickstart.sh - installs what is missing (Debian packages), builds
# memprof into build/, profiles docs/example.py and prints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" -- --no-print-directory >/dev/null
build/bin/memprof run --force -o build/example.memprof docs/example.py
echo
build/bin/memprof summary --top 5 build/example.memprof
echo
echo "capture: $(pwd)/build/example.memprof   (more: build/bin/memprof --help)"
