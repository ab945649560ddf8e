"""`mvmammo experiment balance-complementary`: the view-balancing benchmark on the `complementary` synthetic preset
(rows, scale and report: experiments/balance.py)."""
from mvmammo.experiments.balance import experiment

EXPERIMENT = experiment("complementary")
