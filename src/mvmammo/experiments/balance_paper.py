"""`mvmammo experiment balance-paper`: the view-balancing benchmark on the `paper` synthetic preset
(rows, scale and report: experiments/balance.py)."""
from mvmammo.experiments.balance import experiment

EXPERIMENT = experiment("paper")
