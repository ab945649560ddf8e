#!/usr/bin/env bash
# Prepares the two git-ignored folders that benchmarks/gpu_check.sh needs on the device machine; pass them to the
# device call as carry: [".whl", ".anchor"] (../shared does not travel, and the device machine has no internet).
#   .whl/     wheels of what the device image lacks (blosc2 and its requirements, pydicom) for its Python
#             (PYVER, default 312), without numpy (the image's own numpy stays: torch is built against it)
#   .anchor/  a copy of ../shared/bench/gpu_anchor.py (the anchor runs in the same call)
# Usage (repo root, on this machine, which reaches the package registry): bash benchmarks/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-312}
mkdir -p .whl .anchor
python3 -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl blosc2 pydicom
rm -f .whl/numpy-*.whl
cp ../shared/bench/gpu_anchor.py .anchor/
for p in .whl/ .anchor/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
du -sh .whl .anchor
