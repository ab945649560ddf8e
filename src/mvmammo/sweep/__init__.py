"""Hyperparameter sweeps on Optuna (the paper's Appendix B search): `mvmammo sweep`.

spaces.py (the named search spaces) · storage.py (journal file or SQL URL) · study.py (slots, counts, the
stale-trial check) · worker.py (one worker: claim, train, tell) · executors.py (local processes, Slurm through
submitit) · launch.py (the command's flow) · final.py (best set, seed runs, test table) · figures.py
(Figures 3 and 8, no torch).
"""
