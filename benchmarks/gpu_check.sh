#!/usr/bin/env bash
# Device checks in calls of at most 8 minutes each (BUDGET, default 470 s: every step's timeout is cut to what is
# left of it). PHASE=core (the default; issue 13's figures): precision check (bf16 fast path vs fp32 plain path),
# the anchor and our eager step at batch 4 (peak memory: end to end and step alone), the window store (build +
# windows/s into pinned memory with all cores), training from the store at batch 4 and 16, then compiled training
# and TTA inference (windows batched across draws) from the store with the time that is left. PHASE=extra (a
# second, ~4-minute call; issue 15 and the augmentation): the heatmap command end to end (one image at a time vs
# the overlapped pipeline), the heatmap stage's network in both modes (full-size images/s) and
# the augmentation of a store batch (two-step vs direct heatmap sampling). PHASE=all runs both (BUDGET=900).
# Most important first, so a call cut short still returns the earlier numbers; everything goes under $OUT. Python
# packages the device image lacks (blosc2 and its needs, pydicom) are installed from wheels carried in .whl/ when
# present. Usage (repo root):
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh            [SIZE=small DEVICE=cpu for a dry run]
# The anchor is read from $ANCHOR (default .anchor/gpu_anchor.py: a copy carried for the call, since
# ../shared does not travel to the device machine; elsewhere point ANCHOR at ../shared/bench/gpu_anchor.py).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ -z "${NO_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Everything is written under $WORK; after every step the small result files are packed into
# $OUT/gpu_results.tgz (the device tool returns at most 8 files, so one archive), the store's shards are not.
FINAL_OUT=${OUT:-./gpu_out}; WORK=${WORK:-/tmp/gpu_work}; OUT=$WORK
mkdir -p "$FINAL_OUT" "$OUT/compiled" "$OUT/fromstore"
pack() { tar czf "$FINAL_OUT/gpu_results.tgz" -C "$WORK" --exclude=storebench/store --exclude='storebench/cohort*' . 2>/dev/null; }
trap pack EXIT
BUDGET=${BUDGET:-470}; [ "${PHASE:-core}" = all ] && BUDGET=${BUDGET_ALL:-900}
# left N: N seconds, or what is left of the budget (at least 5 s), whichever is smaller.
left() { local l=$(( BUDGET - SECONDS )); [ "$l" -lt 5 ] && l=5; [ "$1" -lt "$l" ] && l=$1; echo "$l"; }
SIZE=${SIZE:-full}; DEVICE=${DEVICE:-cuda}; BREASTS=${BREASTS:-24}
ANCHOR=${ANCHOR:-.anchor/gpu_anchor.py}
EAGER=${EAGER:-bf16-cl-eager-b4}
COMPILED=${COMPILED:-bf16-cl-compile-b16,bf16-cl-compile-b16-infer}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/gpu.txt"
PHASE=${PHASE:-core}
if [ "$PHASE" != extra ]; then
# Smoke test first (small windows, seconds): the prefetcher's CUDA path (host-to-device copies on a side stream,
# record_stream, event-gated reuse of pinned buffers) had never run on a GPU when this script was written. If it
# fails here, every training configuration below runs with -noprefetch, so their figures still come back (and
# smoke.log says why).
NP=""
if ! timeout "$(left 90)" $PY benchmarks/throughput.py --size small --device "$DEVICE" --breasts 4 --steps 2 --warmup 1 \
        --configs bf16-cl-eager-b2 --no-anchor --out "$OUT/smoke" >"$OUT/smoke.log" 2>&1 \
        || grep -q '"error"' "$OUT/smoke/throughput.json" 2>/dev/null; then
    NP="-noprefetch"; echo "prefetcher smoke test failed: training configurations run with -noprefetch" | tee -a "$OUT/smoke.log"
fi
# Train configurations (not -infer ones) get $NP appended.
np() { echo "$1" | tr ',' '\n' | sed "/-infer/!s/\$/$NP/" | paste -sd, -; }
EAGER=$(np "$EAGER"); COMPILED=$(np "$COMPILED"); STORE_CONFIGS=$(np "${STORE_CONFIGS:-bf16-cl-eager-b4,bf16-cl-eager-b16}")
pack
timeout "$(left "${PRECISION_TIMEOUT:-30}")" $PY benchmarks/check_precision.py --size "$SIZE" --device "$DEVICE" --out "$OUT" 2>&1 | tee "$OUT/precision.log"; pack
ANCHOR_ARGS=(--anchor "$ANCHOR" --anchor-timeout "${ANCHOR_TIMEOUT:-90}" "--anchor-args=${ANCHOR_EXTRA:---no-compile}")
[ -f "$ANCHOR" ] || ANCHOR_ARGS=(--no-anchor)
timeout "$(left "${EAGER_TIMEOUT:-120}")" $PY benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" --breasts "$BREASTS" \
    --configs "$EAGER" --out "$OUT" "${ANCHOR_ARGS[@]}" 2>&1 | tee "$OUT/throughput.log"; pack
# The store: N full-size synthetic breasts (paper preset), stored with all cores, read back with 1, 2, all threads.
STORE_BREASTS=${STORE_BREASTS:-16}
STORE_ARGS=(); [ "$SIZE" = full ] || STORE_ARGS=(--size small)
timeout "$(left "${STORE_TIMEOUT:-45}")" $PY benchmarks/store.py --breasts "$STORE_BREASTS" --out "$OUT/storebench" "${STORE_ARGS[@]}" 2>&1 \
    | tail -40 | tee "$OUT/store.log"
find benchmarks/results -name 'store-*.json' -newer "$OUT/gpu.txt" -exec cp {} "$OUT/" \; ; pack   # its result JSON
STORE=(); [ -f "$OUT/storebench/store/index.parquet" ] && STORE=(--store "$OUT/storebench/store")
AJ=(--no-anchor); [ -f "$OUT/anchor/anchor.json" ] && AJ=(--anchor-json "$OUT/anchor/anchor.json")
# Training from the store (the loader's end-to-end figure and batch 4's peak memory on the default data path),
# then compiled from the store: last, with the time that is left (compiling the model and the augmentation took
# ~100-150 s of it on an H100).
timeout "$(left "${STORE_TRAIN_TIMEOUT:-50}")" $PY benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" --breasts "$BREASTS" \
    --configs "$STORE_CONFIGS" --out "$OUT/fromstore" "${STORE[@]}" "${AJ[@]}" 2>&1 \
    | tee "$OUT/fromstore/throughput.log"; pack
timeout "$(left "${COMPILED_TIMEOUT:-400}")" $PY benchmarks/throughput.py --size "$SIZE" --device "$DEVICE" --breasts "$BREASTS" \
    --configs "$COMPILED" --out "$OUT/compiled" "${STORE[@]}" "${AJ[@]}" 2>&1 | tee "$OUT/compiled/throughput.log"; pack
fi
if [ "$PHASE" != core ]; then
# The heatmap command end to end (issue 15's full-size images/s): full-size synthetic breasts through
# `make_heatmaps` in both modes, one image at a time vs the overlapped pipeline (host threads read, prepare and
# write while the GPU runs the network), with the host's own ceiling (no network) in the same invocation.
PIPE_ARGS=(--device "$DEVICE" --breasts "${HEAT_BREASTS:-24}" --network densenet --mode both --tag "$DEVICE" --out "$OUT")
[ "$SIZE" = full ] || PIPE_ARGS=(--device "$DEVICE" --breasts 2 --size small --network densenet --mode both --batch 16 --tag dryrun --out "$OUT")
timeout "$(left "${PIPE_TIMEOUT:-150}")" $PY benchmarks/heatmaps_pipeline.py "${PIPE_ARGS[@]}" 2>&1 | grep -v '^ ' | tail -8 | tee "$OUT/heatmaps_pipeline.log"; pack
# The augmentation of a window-store batch (full resolution, 16 windows): heatmaps upsampled then resampled vs
# read straight from the 1/8 grid (what training does now).
AUG_ARGS=(--device "$DEVICE" --batch 16 --repeats 5 --out "$OUT"); [ "$SIZE" = full ] || AUG_ARGS+=(--size small)
timeout "$(left "${AUG_TIMEOUT:-25}")" $PY benchmarks/augment_speed.py "${AUG_ARGS[@]}" 2>&1 | tail -12 | tee "$OUT/augment.log"; pack
# The heatmap stage: DenseNet-121 on 256-px patches (bf16, channels-last) and one whole full-size CC image, in both
# modes (patches: NYU-exact; dense: features once over the crop). HEAT_COMPILE=1 adds torch.compile.
HEAT_ARGS=(--device "$DEVICE" --batch "${HEAT_BATCH:-512}" --seconds "${HEAT_SECONDS:-8}" --mode both --cohort 0 --tag "$DEVICE" --out "$OUT")
[ "$DEVICE" = cpu ] && HEAT_ARGS=(--device cpu --batch 4 --seconds 2 --mode both --cohort 0 --dense-rows 256 --tag dryrun --out "$OUT")
[ "$DEVICE" = cpu ] || HEAT_ARGS+=(--bf16 --channels-last --full-image)
[ -n "${HEAT_COMPILE:-}" ] && HEAT_ARGS+=(--compile)
timeout "$(left "${HEAT_TIMEOUT:-55}")" $PY benchmarks/heatmaps_speed.py "${HEAT_ARGS[@]}" 2>&1 | tail -3 | tee "$OUT/heatmaps.log"; pack
fi
