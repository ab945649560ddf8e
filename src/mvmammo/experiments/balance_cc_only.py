"""`mvmammo experiment balance-cc-only`: the view-balancing benchmark on the `cc-only` synthetic preset
(rows, scale and report: experiments/balance.py)."""
from mvmammo.experiments.balance import experiment

EXPERIMENT = experiment("cc-only")
