"""The view-balancing benchmark (issue 14, docs/balance.md): the paper's four regularizers and every later
method on Joint, on one synthetic preset, 3 seeds, at a reduced CPU demo scale.

Commands, one experiment per preset (each in its own folder, independent of the others):
    mvmammo experiment balance-paper --out runs/balance-paper
    mvmammo experiment balance-complementary | balance-cc-only | balance-mlo-only | balance-balanced
(`--quick` for a smoke run, `--rows joint,ogm_ge` for a subset, `--jobs N`). The modules balance_<preset>.py
only name their preset; the rows, the scale and the report live here.

Rows (run folders <row>-s<seed>):
  uni_cc, uni_mlo   uni-view ResNets: the pretraining row's columns and UMT's teachers (Row.needs trains them
                    first, seed by seed), and the uni-view references of the table;
  joint             the baseline every method is compared with;
  pretrain          Joint, columns and FCs from the uni-view runs' best.pt, only the fused head trains;
  split_lr          Joint, MLO column at a tenth of the base rate (as table2);
  gblend            Joint + offline gradient blending, weights from one estimate (three 3-epoch models, seed 0,
                    serving all seeds) on the loss curves over epochs [0, 3] (as table2, V = 10% of the
                    training patients);
  moddrop           Joint, drop rates 0.25 (CC) and 0.5 (MLO) (as table2);
  <method>          Joint with reg.method=<method> at its config defaults, for every later method of
                    method_config.LATER_METHODS, with these exceptions (METHOD_OVERRIDES): ume on the Split
                    family (UME is an ensemble of uni-view learners: Split's two heads), umt with the uni-view
                    runs of the same seed as teachers, mmpareto with model.aux_heads=true (its uni-modal heads),
                    reconboost with 1-epoch stages and rectifications (the defaults, 4 + 4 per view, would not
                    finish one round in the demo's epochs). mla and qmf get their inference gate from reg.method.

After the runs (:func:`finish`, called by `mvmammo experiment`): view utilisation of every run (test split,
best.pt, analysis.utilization), then the table balance_table.md/.csv/.json and the figure balance.png
(experiments/balance_table.py, balance_figure.py).

CPU demo scale (BASE): 800 breasts, 96x64 px, width 8, EPOCHS epochs, TTA 4: ~57 training runs per preset
(18 rows x 3 seeds + the 3 blending-estimate models). The measured time is in docs/balance.md. A serious
comparison needs the `paper` scale on a GPU (docs/scale.md): thousands of breasts at >= 256 px, tens of epochs,
each method's hyperparameters tuned (`mvmammo sweep <method>`), 5+ seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mvmammo.experiments import Experiment, Row
from mvmammo.method_config import LATER_METHODS

PRESETS = ("paper", "complementary", "cc-only", "mlo-only", "balanced")
EPOCHS = 5
BASE = ("data.synth_breasts=800", "data.size_cc=(96, 64)", "data.size_mlo=(96, 64)", "model.width=8",
        f"optim.epochs={EPOCHS}", "optim.batch_size=16", "optim.lr=1e-3", "run.tta=4", "run.grad_norms=true",
        # The blending estimate's window, here so that --quick can shorten it (row overrides come last): the
        # first 3 epochs, where the columns' speeds differ most, as table2 (3 models x 3 epochs).
        "reg.blend_epochs=(0, 3)")
# The smoke scale (tests, `--quick`): seconds to a minute per run on one core.
QUICK = ("data.synth_breasts=200", "data.size_cc=(64, 48)", "data.size_mlo=(64, 48)", "model.width=4",
         "optim.epochs=2", "run.tta=1", "reg.blend_epochs=(0, 2)")

UNI = ("uni_cc", "uni_mlo")
PAPER_ROWS = (
    Row("pretrain", ("model.family=joint", "reg.pretrained_cc={out}/uni_cc-s{seed}",
                     "reg.pretrained_mlo={out}/uni_mlo-s{seed}", "reg.finetune=head"), needs=UNI),
    Row("split_lr", ("model.family=joint", "optim.alpha_mlo=-1.0")),
    Row("gblend", ("model.family=joint", "model.aux_heads=true", "reg.blend=offline",
                   "reg.blend_weights_file={out}/gblend_estimate/blend_weights.json", "reg.blend_metric=loss",
                   "reg.blend_holdout=0.1")),
    Row("moddrop", ("model.family=joint", "reg.moddrop_cc=0.25", "reg.moddrop_mlo=0.5")),
)
PAPER_METHODS = tuple(r.name for r in PAPER_ROWS)

# What a later method's row sets besides reg.method (everything else: the method's config defaults).
METHOD_OVERRIDES: dict[str, tuple[str, ...]] = {
    "ume": ("model.family=split",),
    "umt": ("methods.umt.teacher_cc={out}/uni_cc-s{seed}", "methods.umt.teacher_mlo={out}/uni_mlo-s{seed}"),
    "mmpareto": ("model.aux_heads=true",),
    "reconboost": ("methods.reconboost.stage_epochs=1", "methods.reconboost.correct_epochs=1"),
}
METHOD_NEEDS: dict[str, tuple[str, ...]] = {"umt": UNI}


def later_methods() -> tuple[str, ...]:
    """Every later method the config knows (method_config.LATER_METHODS without "none")."""
    return tuple(m for m in LATER_METHODS if m != "none")


def method_row(name: str) -> Row:
    extra = METHOD_OVERRIDES.get(name, ())
    family = () if any(o.startswith("model.family=") for o in extra) else ("model.family=joint",)
    return Row(name, (*family, f"reg.method={name}", *extra), needs=METHOD_NEEDS.get(name, ()))


def rows() -> tuple[Row, ...]:
    """uni_cc, uni_mlo, joint, the paper's four, then the later methods (the table's order)."""
    base = (Row("uni_cc", ("model.family=uni_cc",)), Row("uni_mlo", ("model.family=uni_mlo",)),
            Row("joint", ("model.family=joint",)))
    return base + PAPER_ROWS + tuple(method_row(m) for m in later_methods())


@dataclass(frozen=True)
class BalanceExperiment(Experiment):
    # Called as finish(exp, runs, out) after the generic table (commands/experiment.py): the balance table.
    finish: Callable[..., object] | None = None


def finish(exp: Experiment, runs: list[Path], out: Path, jobs: int | None = None) -> dict:
    """Utilisation analyses of the runs that lack one, then the preset's table and figure; returns paths."""
    from mvmammo.experiments.balance_figure import balance_figure
    from mvmammo.experiments.balance_table import analyse_runs, balance_table, write_table
    from mvmammo.experiments.report import find_oracle

    out = Path(out)
    analyse_runs(runs, jobs=jobs)
    oracle = find_oracle(out)
    result = balance_table(runs, oracle, preset=exp_preset(exp))
    paths = write_table(result, out, stem="balance_table")
    paths["figure"] = balance_figure(result, out / "balance.png")
    print(f"balance table: {paths['md']} (+ .csv, .json); figure: {paths['figure']}", flush=True)
    return paths


def exp_preset(exp: Experiment) -> str:
    return next((o.split("=", 1)[1] for o in exp.overrides if o.startswith("data.synth_preset=")), "?")


def experiment(preset: str) -> BalanceExperiment:
    if preset not in PRESETS:
        raise KeyError(f"balance experiment for preset {preset!r}: one of {', '.join(PRESETS)}")
    return BalanceExperiment(
        name=f"balance-{preset}",
        reproduces=f"View-balancing methods on the {preset!r} preset (issue 14)",
        command=f"mvmammo experiment balance-{preset} --out runs/balance-{preset}",
        preset="default",
        overrides=(f"data.synth_preset={preset}",) + BASE,
        rows=rows(),
        quick_overrides=QUICK,
        expected="a benchmark, nothing asserted: per method the test AUC with CIs against Joint and the oracle, "
                 "and where the Shapley shares move (docs/balance.md, Results)",
        notes=["table: balance_table.md (+ .csv, .json); figure: balance.png"],
        finish=finish,
    )
