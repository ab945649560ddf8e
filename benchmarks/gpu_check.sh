#!/usr/bin/env bash
# One device call (at most 8 minutes): precision check (bf16 fast path vs fp32 plain path), the window store
# (build + windows/s into pinned memory with all cores), end-to-end training from the store at batch 4 and 16,
# TTA inference, peak memory, and the anchor (same machine, same call), everything under $OUT; cheapest and
# most important first, so a call cut short still returns the eager numbers. Usage (repo root):
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh            [SIZE=small DEVICE=cpu for a dry run]
# The anchor is read from $ANCHOR (default .anchor/gpu_anchor.py: a copy carried for the call, since
# ../shared does not travel to the device machine; elsewhere point ANCHOR at ../shared/bench/gpu_anchor.py).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-./gpu_out}; mkdir -p "$OUT/compiled"
SIZE=${SIZE:-full}; DEVICE=${DEVICE:-cuda}; BREASTS=${BREASTS:-24}
ANCHOR=${ANCHOR:-.anchor/gpu_anchor.py}
EAGER=${EAGER:-bf16-cl-eager-b4,bf16-cl-eager-b16-infer,bf16-cl-eager-b16}
COMPILED=${COMPILED:-bf16-cl-compile-b16,bf16-cl-compile-b16-infer}
PY=${PY:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/gpu.txt"
timeout 90 $PY benchmarks/check_precision.py --size "$SIZE" --device "$DEVICE" --out "$OUT" 2>&1 | tee "$OUT/precision.log"
# The store: N full-size synthetic breasts (paper preset), stored with all cores, read back with 1, 2, all threads.
STORE_BREASTS=${STORE_BREASTS:-16}
STORE_ARGS=(); [ "$SIZE" = full ] || STORE_ARGS=(--size small)
timeout 240 $PY benchmarks/store.py --breasts "$STORE_BREASTS" --out "$OUT/storebench" "${STORE_ARGS[@]}" 2>&1 \
    | tail -40 | tee "$OUT/store.log"
STORE=(); [ -f "$OUT/storebench/store/index.parquet" ] && STORE=(--store "$OUT/storebench/store")
ANCHOR_ARGS=(--anchor "$ANCHOR" --anchor-timeout "${ANCHOR_TIMEOUT:-120}" "--anchor-args=${ANCHOR_EXTRA:---no-compile}")
[ -f "$ANCHOR" ] || ANCHOR_ARGS=(--no-anchor)
$PY benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" --breasts "$BREASTS" --configs "$EAGER" --out "$OUT" \
    "${STORE[@]}" "${ANCHOR_ARGS[@]}" 2>&1 | tee "$OUT/throughput.log"
AJ=(--no-anchor); [ -f "$OUT/anchor/anchor.json" ] && AJ=(--anchor-json "$OUT/anchor/anchor.json")
$PY benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" --breasts "$BREASTS" --configs "$COMPILED" \
    --out "$OUT/compiled" "${STORE[@]}" "${AJ[@]}" 2>&1 | tee "$OUT/compiled/throughput.log"
