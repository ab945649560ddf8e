"""The paper's search spaces (Appendix B and section 5) as named spaces of config overrides.

A space fixes some config fields (``base``) and samples others (``params``); a trial's config is
preset + the user's overrides + base + the sampled values. Parameter names are config keys, so a trial's
params read as the overrides that made it.

Learning-rate ranges follow the paper's text: uni-view models [1e-5, 3e-3] (section 5, Figure 3), the two-view
families [1e-5, 1e-3] (Appendix B; SPEC.md section 5). ModDrop and split learning rates sample at two fixed
base rates (1e-5 and 1e-4, ten sets each in the paper): one space per base rate.

The later view-balancing methods have one space each, named by the method (``mvmammo sweep ogm_ge``): the
method's key hyperparameter(s) and the learning rate (docs/balance.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mvmammo.errors import UsageError


@dataclass(frozen=True)
class LogUniform:
    key: str
    low: float
    high: float


@dataclass(frozen=True)
class Uniform:
    key: str
    low: float
    high: float


@dataclass(frozen=True)
class Space:
    name: str
    doc: str
    base: tuple[str, ...]
    params: tuple[LogUniform | Uniform, ...]
    requires: tuple[str, ...] = ()  # config keys the user must set (e.g. pretrained run folders)


def _lr_space(family: str, high: float, source: str) -> Space:
    return Space(f"lr-{family}", f"learning rate of {family}, log-uniform in [1e-5, {high:g}] ({source})",
                 (f"model.family={family}",), (LogUniform("optim.lr", 1e-5, high),))


_SPACES = [
    _lr_space("uni_cc", 3e-3, "section 5, Figure 3a"),
    _lr_space("uni_mlo", 3e-3, "section 5, Figure 3b"),
    _lr_space("joint", 1e-3, "Appendix B"),
    _lr_space("shared", 1e-3, "Appendix B"),
    _lr_space("split", 1e-3, "Appendix B"),
    Space("lr-pretrained", "Joint fine-tuned from uni-view columns: learning rate log-uniform in [1e-5, 1e-3] "
          "(Appendix B, 'Pretraining'); set reg.pretrained_cc and reg.pretrained_mlo",
          ("model.family=joint",), (LogUniform("optim.lr", 1e-5, 1e-3),),
          requires=("reg.pretrained_cc", "reg.pretrained_mlo")),
]
for _lr in ("1e-5", "1e-4"):
    _SPACES.append(Space(f"moddrop-lr{_lr}", f"ModDrop rates U[0, 1) per view at lr {_lr} (Appendix B)",
                         ("model.family=joint", f"optim.lr={_lr}"),
                         (Uniform("reg.moddrop_cc", 0.0, 1.0), Uniform("reg.moddrop_mlo", 0.0, 1.0))))
    _SPACES.append(Space(f"split-lrs-lr{_lr}", f"split learning-rate exponents alpha U[-1, 1] per group at base "
                         f"lr {_lr}: lr_g = lr * 10**alpha_g (Appendix B, Figure 8)",
                         ("model.family=joint", f"optim.lr={_lr}"),
                         tuple(Uniform(f"optim.alpha_{g}", -1.0, 1.0) for g in ("cc", "mlo", "shared"))))


# The later view-balancing methods (method_config.py, docs/balance.md): one space per method, named by it
# (`mvmammo sweep ogm_ge ...`), sampling the method's key hyperparameter(s) around its default (the method
# papers' or BalanceBenchmark's typical range) and the learning rate on the two-view range of Appendix B.
# Only float fields are sampled (a trial's values are floats: window sizes, epoch counts and switches stay
# at their defaults or are set as overrides).
_LR = LogUniform("optim.lr", 1e-5, 1e-3)
_JOINT = ("model.family=joint",)
# name: (fixed overrides besides reg.method, sampled method fields, what the range is based on, required keys)
_METHOD_SPACES: dict[str, tuple[tuple[str, ...], tuple[LogUniform | Uniform, ...], str, tuple[str, ...]]] = {
    "ogm_ge": (_JOINT, (Uniform("methods.ogm_ge.alpha", 0.1, 1.0),),
               "alpha U[0.1, 1] (typical 0.1-0.8; BalanceBenchmark 0.3)", ()),
    "greedy": (_JOINT, (LogUniform("methods.greedy.epsilon", 1e-3, 1e-1),),
               "trigger epsilon log-U[1e-3, 0.1] (paper 0.01)", ()),
    "pmr": (_JOINT, (LogUniform("methods.pmr.alpha", 0.1, 3.0), Uniform("methods.pmr.momentum", 0.0, 0.9)),
            "alpha log-U[0.1, 3] (official 1, BalanceBenchmark 0.6), prototype EMA momentum U[0, 0.9] "
            "(official 0.2, BalanceBenchmark 0.5)", ()),
    "agm": (_JOINT, (LogUniform("methods.agm.alpha", 0.01, 1.0),), "alpha log-U[0.01, 1] (BalanceBenchmark 0.1)",
            ()),
    "mla": (_JOINT, (), "learning rate only (MLA has no continuous hyperparameter; the projection is a switch)",
            ()),
    "mmpareto": (_JOINT + ("model.aux_heads=true",), (Uniform("methods.mmpareto.gamma", 1.0, 2.0),),
                 "gradient scale gamma U[1, 2] (paper 1.5)", ()),
    "umt": (_JOINT, (LogUniform("methods.umt.weight", 1.0, 100.0),),
            "distillation weight log-U[1, 100] (paper 10); set methods.umt.teacher_cc and teacher_mlo",
            ("methods.umt.teacher_cc", "methods.umt.teacher_mlo")),
    "ume": (("model.family=split",), (), "learning rate only (an ensemble of uni-view learners: Split)", ()),
    "reconboost": (_JOINT, (Uniform("methods.reconboost.w1", 2.0, 10.0), Uniform("methods.reconboost.w2", 0.0, 1.5)),
                   "w1 U[2, 10] (paper 5), w2 U[0, 1.5] (paper 1; w1 > w2 always)", ()),
    "qmf": (_JOINT, (LogUniform("methods.qmf.lam", 0.01, 1.0),), "ranking-loss weight log-U[0.01, 1] (paper 0.1)",
            ()),
    "opm": (_JOINT, (Uniform("methods.opm.q_base", 0.1, 0.7), Uniform("methods.opm.alpha", 0.0, 1.0)),
            "base drop rate q_base U[0.1, 0.7] (0.4), alpha U[0, 1] (0.5)", ()),
}
for _name, (_base, _params, _why, _req) in _METHOD_SPACES.items():
    _SPACES.append(Space(_name, f"reg.method={_name}: {_why}; learning rate log-uniform [1e-5, 1e-3] (Appendix B)",
                         (*_base, f"reg.method={_name}"), (*_params, _LR), requires=_req))

SPACES: dict[str, Space] = {s.name: s for s in _SPACES}


def get(name: str) -> Space:
    if name not in SPACES:
        raise UsageError(f"unknown sweep experiment {name!r}; one of {', '.join(SPACES)} (see docs/sweep.md)")
    return SPACES[name]


def suggest(trial, space: Space) -> dict[str, float]:
    """Sample (or, for a retried trial, read back) the space's values through an optuna Trial."""
    out = {}
    for p in space.params:
        out[p.key] = float(trial.suggest_float(p.key, p.low, p.high, log=isinstance(p, LogUniform)))
    return out


def as_overrides(params: dict[str, float]) -> list[str]:
    # repr keeps every digit, so the run's config holds exactly the sampled value.
    return [f"{k}={v!r}" for k, v in sorted(params.items())]


def effective_rates(lr: float, params: dict[str, float]) -> dict[str, float]:
    """Per-group learning rates of one trial: lr_g = lr * 10**alpha_g (alpha 0 when not sampled)."""
    lr = float(params.get("optim.lr", lr))
    return {g: lr * math.pow(10.0, float(params.get(f"optim.alpha_{g}", 0.0))) for g in ("cc", "mlo", "shared")}
