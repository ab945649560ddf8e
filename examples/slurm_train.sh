#!/usr/bin/env bash
# One mvmammo training run on N nodes x G GPUs under Slurm, elastic (torchrun restarts failed workers and the
# run resumes from RUN/last.pt). Submit with:  sbatch --nodes=2 examples/slurm_train.sh runs/joint-s0
#
# Needs: a shared file system visible at the same path on every node for the run folder and the window store
# (data.cache_dir or data.cache), mvmammo installed in the environment activated below. Rank 0 alone writes the
# run folder (config.json, metrics.jsonl, checkpoints); every rank reads last.pt when it (re)starts.
#SBATCH --job-name=mvmammo-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun agent per node; it starts the GPU workers
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32           # reader threads decode the store into pinned memory
#SBATCH --time=24:00:00
#SBATCH --requeue                    # a preempted job starts again and resumes from last.pt
set -euo pipefail

RUN=${1:?usage: sbatch examples/slurm_train.sh RUN_FOLDER [overrides...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-4}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${MVMAMMO_RDZV_PORT:-29500}

# source /path/to/venv/bin/activate
# A fresh rendezvous store per restart: torch's shared one keeps the killed attempt's worker addresses, and
# mvmammo refuses to start on several nodes with --max-restarts without this (docs/scale.md).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
srun torchrun \
  --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" --rdzv-id "$SLURM_JOB_ID" \
  --max-restarts 3 \
  -m mvmammo train --preset paper-full run.out="$RUN" "$@"
