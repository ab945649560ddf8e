"""Config sections of the later view-balancing methods (training/methods/, docs/balance.md).

A run picks at most one of them with ``reg.method=NAME``; its parameters are set as
``methods.NAME.FIELD=VALUE`` (e.g. ``reg.method=ogm_ge methods.ogm_ge.alpha=0.5``). Defaults are the
method papers' (or their official code's) unless a comment says otherwise; methods.md section 4 gives
the sources. Epoch windows count epochs of our loop (0-based, end exclusive).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OGMGEConfig:
    # k_v = 1 - tanh(alpha * rho_v) for the dominant view (rho_v > 1); BalanceBenchmark's default 0.3.
    alpha: float = 0.3
    start_epoch: int = 0
    end_epoch: int = 50
    ge: bool = True  # Generalization Enhancement: N(0, std(grad)^2) noise on the modulated conv weights


@dataclass(frozen=True)
class GreedyConfig:
    start_epoch: int = 2  # no re-balancing before this epoch (the reference's starting_epoch)
    epsilon: float = 0.01  # |d_speed| above which a re-balancing window starts
    window: int = 5  # steps per re-balancing window (curation_windowsize)
    momentum: float = 0.9  # of the running mean of each view's h that stands in for it while re-balancing


@dataclass(frozen=True)
class PMRConfig:
    alpha: float = 1.0  # weight of the weaker view's prototypical loss
    momentum: float = 0.2  # EMA of the prototypes: c <- (1 - momentum) c_new + momentum c_old
    proto_fraction: float = 0.1  # share of the epoch's training breasts used to recompute the prototypes


@dataclass(frozen=True)
class AGMConfig:
    alpha: float = 0.1
    start_epoch: int = 0
    end_epoch: int = 1000


@dataclass(frozen=True)
class MLAConfig:
    project: bool = True  # the head-gradient projection the paper describes (the official code never runs it)


@dataclass(frozen=True)
class MMParetoConfig:
    gamma: float = 1.5  # scale of the combined encoder gradient


@dataclass(frozen=True)
class UMTConfig:
    teacher_cc: str = ""  # run folders of uni-view teachers (best.pt); `mvmammo experiment balance` trains them
    teacher_mlo: str = ""
    weight: float = 10.0  # L = L_CE + weight * sum_v MSE(teacher h_v, student h_v)


@dataclass(frozen=True)
class ReconBoostConfig:
    w1: float = 5.0
    w2: float = 1.0
    stage_epochs: int = 4  # epochs per modality stage
    correct_epochs: int = 4  # epochs of global rectification after each modality stage
    boost_rate: float = 1.0


@dataclass(frozen=True)
class QMFConfig:
    lam: float = 0.1  # weight of the confidence ranking loss
    conf_scale: float = 0.1  # conf_v = conf_scale * energy-based confidence


@dataclass(frozen=True)
class OPMConfig:
    q_base: float = 0.4
    alpha: float = 0.5
    p_exe: float = 0.7  # probability that the drop step runs at a given step


@dataclass(frozen=True)
class MethodsConfig:
    ogm_ge: OGMGEConfig = field(default_factory=OGMGEConfig)
    greedy: GreedyConfig = field(default_factory=GreedyConfig)
    pmr: PMRConfig = field(default_factory=PMRConfig)
    agm: AGMConfig = field(default_factory=AGMConfig)
    mla: MLAConfig = field(default_factory=MLAConfig)
    mmpareto: MMParetoConfig = field(default_factory=MMParetoConfig)
    umt: UMTConfig = field(default_factory=UMTConfig)
    reconboost: ReconBoostConfig = field(default_factory=ReconBoostConfig)
    qmf: QMFConfig = field(default_factory=QMFConfig)
    opm: OPMConfig = field(default_factory=OPMConfig)


# How a method's model combines its two per-view logits at inference (model.fusion_gate=auto resolves to
# this): MLA gates by prediction entropy, QMF weights by energy-based confidence; all others sum.
FUSION_GATES = {"mla": "entropy", "qmf": "energy"}
LATER_METHODS = ("none", "ogm_ge", "greedy", "pmr", "agm", "mla", "mmpareto", "umt", "ume", "reconboost", "qmf",
                 "opm")
