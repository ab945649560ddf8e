#!/usr/bin/env bash
# The paper's whole hyperparameter search (Appendix B) on a Slurm cluster, from a login node.
# Each sweep is a job array of WORKERS tasks; each task is one worker that claims trials until none is left.
# Cost at the measured H200 speed: about 1,963 GPU-hours (docs/sweep.md shows the arithmetic).
#
#   TABLE=/shared/exams.csv CACHE=/shared/cache OUT=/shared/sweeps PARTITION=gpu bash examples/slurm_sweep.sh
#
# Optional: STORAGE=postgresql+psycopg2://user@dbhost:5432/sweeps (default: one journal file per sweep folder),
# GPUS_PER_TRIAL=4 (each trial a torchrun job on 4 GPUs of one node), WORKERS=10.
set -euo pipefail
: "${TABLE:?exam table}" "${CACHE:?window cache folder (built below if missing)}" "${OUT:?sweep root on a shared file system}"
PARTITION=${PARTITION:-gpu}
WORKERS=${WORKERS:-10}
GPUS_PER_TRIAL=${GPUS_PER_TRIAL:-1}
STORAGE=${STORAGE:-}

# Decode once; every trial reads the same cache.
[ -f "$CACHE/meta.json" ] || mvmammo cache "$TABLE" --out "$CACHE"

common=(--trials 10 --trial-seeds 0,1,2 --final-seeds 0,1,2 --workers "$WORKERS" --executor slurm
        --partition "$PARTITION" --gpus-per-task "$GPUS_PER_TRIAL" --time-min 2880 --heartbeat 60 --grace 900)
[ "$GPUS_PER_TRIAL" -gt 1 ] && common+=(--torchrun-gpus "$GPUS_PER_TRIAL")
[ -n "$STORAGE" ] && common+=(--storage "$STORAGE")
data=(data.table="$TABLE" data.cache="$CACHE")

sweep() {  # NAME EXPERIMENT "EXTRA OPTIONS" [OVERRIDES...]: one sweep in the background (it waits for its array)
    local name=$1 exp=$2 opts=$3
    shift 3
    # shellcheck disable=SC2086 # opts: words on purpose; later options win over "${common[@]}"
    mvmammo sweep "$exp" "${data[@]}" "$@" --preset paper-full "${common[@]}" $opts --out "$OUT/$name" \
        >"$OUT/$name.out" 2>"$OUT/$name.progress" &
}
mkdir -p "$OUT"

# Section 5 / Figure 3: uni-view learning curves (one seed per learning rate, as the figure).
sweep uni_cc lr-uni_cc "--trial-seeds 0"
sweep uni_mlo lr-uni_mlo "--trial-seeds 0"
# Appendix B: the three families, ten learning rates x three seeds.
sweep joint lr-joint ""
sweep shared lr-shared ""
sweep split lr-split ""
# ModDrop (150 epochs) and split learning rates, ten sets at each base rate.
for lr in 1e-5 1e-4; do
    sweep "moddrop-$lr" "moddrop-lr$lr" "" optim.epochs=150
    sweep "split-lrs-$lr" "split-lrs-lr$lr" ""
done
wait
# Pretraining needs the best uni-view runs: Joint from their columns, ResNets frozen, 50 epochs (section 6.2).
best() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['runs'][0])" "$OUT/$1/best.json"; }
sweep pretrained lr-pretrained "" reg.pretrained_cc="$(best uni_cc)" reg.pretrained_mlo="$(best uni_mlo)" \
    reg.finetune=head optim.epochs=50
wait
mvmammo sweep-figures "$OUT/uni_cc" "$OUT/uni_mlo" --out "$OUT/figures"
for s in "$OUT"/*/test_table.txt; do echo "== $s"; cat "$s"; done
