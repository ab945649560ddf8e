"""`mvmammo experiment balance-balanced`: the view-balancing benchmark on the `balanced` synthetic preset
(rows, scale and report: experiments/balance.py)."""
from mvmammo.experiments.balance import experiment

EXPERIMENT = experiment("balanced")
