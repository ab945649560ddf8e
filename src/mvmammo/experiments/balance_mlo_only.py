"""`mvmammo experiment balance-mlo-only`: the view-balancing benchmark on the `mlo-only` synthetic preset
(rows, scale and report: experiments/balance.py)."""
from mvmammo.experiments.balance import experiment

EXPERIMENT = experiment("mlo-only")
