"""The configuration tree: typed, frozen dataclasses with defaults in code.

One override syntax everywhere: ``section.field=value`` (e.g. ``optim.lr=1e-4 model.family=shared``).
Named presets (``configs/``, and :data:`PRESETS`) are lists of such overrides applied on top of the defaults.
The resolved config is written into every run folder as ``config.json``.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from mvmammo.errors import UsageError
from mvmammo.method_config import FUSION_GATES, MethodsConfig


@dataclass(frozen=True)
class DataConfig:
    # Exam table (CSV/Parquet). Empty = the embedded synthetic cohort, generated on demand.
    table: str = ""
    synth_preset: str = "paper"
    synth_breasts: int = 600
    synth_seed: int = 0
    # Training window (H, W) per view, in pixels of the cached (training-resolution) windows.
    size_cc: tuple[int, int] = (128, 96)
    size_mlo: tuple[int, int] = (128, 96)
    heatmaps: bool = True  # 3 input channels (image + benign + malignant heatmaps) instead of 1
    # Augmentation: position noise and per-border size noise, each up to aug_noise_px pixels at full
    # resolution (2677 px tall CC window), scaled to the cached window size; bicubic resampling.
    aug_noise_px: float = 100.0
    full_height: int = 2677
    cache_dir: str = ""  # empty = <run dir>/../cache (shared across runs of one experiment)
    # A window cache built beforehand (`mvmammo cache TABLE --out DIR`): train/evaluate/predict read it as is
    # (its own meta.json says channels and sizes); empty = build or reuse one under cache_dir.
    cache: str = ""
    # How windows are kept: store (compressed shards + Parquet index, heatmaps at reduced resolution at full size;
    # data/store/) | memmap (uint16 memory-mapped arrays, 71 MB per breast at full resolution; data/cache.py).
    format: str = "store"
    # Store only: heatmap channels kept on a grid this many times coarser than the windows (0 = the store's
    # rule: 8 at full resolution, 1 at demo scale; data/store/format.py).
    heat_factor: int = 0
    # Breasts with one view: drop (default) | mask (kept; the absent view is masked out of the fusion).
    missing_view: str = "drop"
    # Source windows are resized to size_* keeping their aspect ratio (zero padding) unless false
    # (false = stretch each axis independently).
    keep_aspect: bool = True
    # Each epoch: all positives + neg_ratio x as many negatives, drawn afresh (paper: 1). The unit is the
    # exam (paper: every exam with a biopsy record, both breasts of each) or the breast.
    neg_ratio: float = 1.0
    sampling: str = "exam"  # exam | breast
    # Gradient blending's held-out part V of the TRAINING split (by patient, stratified by label): the
    # loop trains on train \ V and logs holdout_* / train_eval_* per epoch. 0 = off (train on all of it).
    holdout_fraction: float = 0.0
    holdout_seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    family: str = "joint"  # registry name: uni_cc, uni_mlo, joint, shared, split
    backbone: str = "resnet22"
    width: int = 16  # channels of the first stage; the paper's column: 16 (stages 16..256)
    fc_dim: int = 512
    input_noise_std: float = 0.01  # N(0, std^2) added to inputs in training (reference code)
    aux_heads: bool = False  # per-view FC + output heads (gradient blending)
    # How the two per-view logits are combined at inference: none (the family's own fusion) | entropy (MLA's
    # entropy gates) | energy (QMF's confidence weights) | auto (the method's: method_config.FUSION_GATES).
    fusion_gate: str = "auto"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    batch_size: int = 4
    epochs: int = 10
    weight_decay: float = 0.0
    # Split learning rates: lr_g = lr * 10**alpha_g for parameter groups by name prefix.
    alpha_shared: float = 0.0
    alpha_cc: float = 0.0
    alpha_mlo: float = 0.0
    # Parameter-name prefixes whose parameters are frozen (requires_grad False, excluded from Adam).
    freeze: tuple[str, ...] = ()
    grad_clip: float = 0.0  # 0 = off


@dataclass(frozen=True)
class RegularizerConfig:
    # Modality dropout: per-sample drop rate of each view's representation before fusion.
    moddrop_cc: float = 0.0
    moddrop_mlo: float = 0.0
    moddrop_rescale: str = "none"  # none | inverted
    moddrop_both: str = "resample"  # allowed | exclude | resample
    # Pretraining: run folders of uni-view runs whose best.pt initialises the columns.
    pretrained_cc: str = ""
    pretrained_mlo: str = ""
    finetune: str = "all"  # all | head
    # Gradient blending: none | fixed | offline
    blend: str = "none"
    blend_weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # (cc, mlo, joint)
    blend_metric: str = "loss"  # loss | auc
    blend_epochs: tuple[int, int] = (0, 5)  # (N, N + n) window for the offline estimate
    # holdout: V = blend_holdout of the training patients, weights from the window's end points (Wang et
    # al.); validation: V = the validation split, weights averaged over the window's epochs (the paper's
    # Appendix C).
    blend_estimate: str = "holdout"
    blend_holdout: float = 0.1
    # reg.blend=offline: the blend_weights.json written by `mvmammo blend-estimate` (its curves give the
    # weights for this run's blend_metric and blend_epochs), or a hand-written {"cc", "mlo", "joint"}.
    # A missing file is estimated on first use (three short runs next to it, by the command that starts the run; see experiments/blend_estimate.py).
    blend_weights_file: str = ""
    blend_swap_views: bool = False  # swap the cc and mlo weights (the paper's Table 5 ablation)
    # One of the later view-balancing methods (training/methods/, docs/balance.md), with its parameters in
    # the section methods.<name>; "none" = only the paper's regularizers above.
    method: str = "none"


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    out: str = "runs/run"
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    compile: bool = False
    # Batches loaded ahead by a background thread into pinned memory (uint16 bytes, copied on a side CUDA
    # stream); 0 = load each batch when it is needed. Results are identical either way.
    prefetch: int = 2
    # Under torchrun (WORLD_SIZE > 1): BatchNorm statistics over the global batch, so N processes with
    # optim.batch_size / N each train the same model as one process with optim.batch_size.
    sync_bn: bool = True
    tta: int = 10  # test-time windows per breast; 0 = deterministic centre window
    progress: bool = True
    grad_norms: bool = True  # per-group gradient norm at every step
    lca: bool = False
    lca_every: int = 60  # optimizer steps per LCA chord
    lca_subsample: int = 64  # breasts in the subsample S drawn once for the run (lca_redraw false)
    # True: S is re-drawn every epoch as lca_fraction of that epoch's positive and of its negative units
    # (exams or breasts, as data.sampling), the paper's Appendix A (970 exams = 10%); a chord never spans
    # two subsamples (one ends at every epoch end).
    lca_redraw: bool = False
    lca_fraction: float = 0.1
    lca_tol: float = 0.05
    max_steps: int = 0  # 0 = no limit; a cap for smoke tests
    tensorboard: bool = False  # also write TensorBoard event files into the run folder (pip install tensorboard)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reg: RegularizerConfig = field(default_factory=RegularizerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)

    def __post_init__(self):
        # model.fusion_gate=auto becomes the method's gate here, so config.json (and every model rebuilt from
        # it by evaluate or predict) says which inference rule the weights were trained for.
        if self.model.fusion_gate == "auto":
            gate = FUSION_GATES.get(self.reg.method, "none")
            object.__setattr__(self, "model", replace(self.model, fusion_gate=gate))


# The paper's full-resolution setting (GPU): windows, column width, minibatch 4, 100 epochs (SPEC section 5).
# The learning rate is the search's (Appendix B: log-uniform in [1e-5, 1e-3]); 1e-5 is its lower end.
_PAPER_FULL = ["data.size_cc=(2677, 1942)", "data.size_mlo=(2974, 1748)", "model.width=16",
               "optim.batch_size=4", "optim.epochs=100", "optim.lr=1e-5", "run.precision=bf16",
               "run.channels_last=True"]

# Named presets: overrides on the defaults (comma-separated names apply left to right). Experiment files in
# src/mvmammo/experiments/ name the paper table they reproduce.
PRESETS: dict[str, list[str]] = {
    "default": [],
    # CPU demo scale: 128x96 windows, a narrow column, short training.
    "cpu-demo": ["data.size_cc=(128, 96)", "data.size_mlo=(128, 96)", "model.width=8", "optim.epochs=12",
                 "optim.batch_size=16", "optim.lr=1e-3"],
    "paper-full": _PAPER_FULL,
    # Modality dropout runs train 150 epochs ("given the slower convergence"); the per-view rates come from
    # the search (U[0, 1) each, at lr 1e-5 or 1e-4): reg.moddrop_cc=... reg.moddrop_mlo=...
    "paper-moddrop": _PAPER_FULL + ["optim.epochs=150"],
    # Pretraining: head-only fine-tuning for 50 epochs; give reg.pretrained_cc / reg.pretrained_mlo.
    "paper-pretrain": _PAPER_FULL + ["optim.epochs=50", "reg.finetune=head"],
    # Loss Change Allocation as Appendix A: lr 1e-5, a chord every 60 steps on 10% of each epoch's positive
    # and negative exams (re-drawn every epoch), about 6 epochs.
    "paper-lca": _PAPER_FULL + ["optim.epochs=6", "optim.lr=1e-5", "run.lca=true", "run.lca_every=60",
                                "run.lca_redraw=true", "run.lca_fraction=0.1"],
}


class ConfigError(UsageError, ValueError):
    """A bad override or preset; the message names the key and the accepted values."""


def _coerce(value: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if typ in (int, float, str):
        try:
            return typ(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}") from exc
    if origin is tuple:
        args = typing.get_args(typ)
        text = value.strip().strip("()[]")
        parts = [p.strip() for p in text.split(",") if p.strip()] if text else []
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(p, args[0], key) for p in parts)
        if len(parts) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(p, a, key) for p, a in zip(parts, args))
    raise ConfigError(f"{key}: cannot parse type {typ}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def override(cfg: Config, assignments: list[str] | tuple[str, ...]) -> Config:
    """Apply ``section.field=value`` (or ``section.sub.field=value`` for nested sections such as
    ``methods.ogm_ge.alpha=0.5``) assignments; unknown keys are errors naming the valid ones."""
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"{item!r}: overrides look like section.field=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise ConfigError(f"{key!r}: overrides look like section.field=value (e.g. optim.lr=1e-4)")
        before = cfg.reg.method
        cfg = _set(cfg, parts, value, key.strip(), "")
        if cfg.reg.method != before and cfg.model.fusion_gate == FUSION_GATES.get(before, "none"):
            # A new method brings its own inference rule, unless a gate other than the old method's was chosen
            # (set model.fusion_gate after reg.method to choose one).
            cfg = replace(cfg, model=replace(cfg.model, fusion_gate=FUSION_GATES.get(cfg.reg.method, "none")))
    return cfg


def _set(node: Any, parts: list[str], value: str, key: str, where: str) -> Any:
    """A copy of dataclass ``node`` with the field path ``parts`` set from the string ``value``."""
    name = parts[0]
    types = _field_types(type(node))
    if name not in types:
        what = f"unknown section {name!r}" if not where else f"unknown field {name!r}; {where} has"
        raise ConfigError(f"{key!r}: {what} {sorted(types) if where else '; one of ' + str(sorted(types))}")
    typ = types[name]
    path = f"{where}.{name}" if where else name
    if len(parts) == 1:
        if is_dataclass(typ):
            raise ConfigError(f"{key!r}: {path} is a section; set one of its fields ({path}.FIELD=value)")
        return replace(node, **{name: _coerce(value, typ, key)})
    if not is_dataclass(typ):
        raise ConfigError(f"{key!r}: {path} is a field, not a section")
    return replace(node, **{name: _set(getattr(node, name), parts[1:], value, key, path)})


def flat_items(cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every leaf field, e.g. ("optim.lr", 1e-4), ("methods.ogm_ge.alpha", 0.3)."""
    out = []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        out.extend(flat_items(v, key + ".") if is_dataclass(v) else [(key, v)])
    return out


def resolve(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the named preset(s) (comma-separated), then the command-line overrides."""
    cfg = Config()
    for name in [p for p in preset.split(",") if p]:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; one of {sorted(PRESETS)}")
        cfg = override(cfg, PRESETS[name])
    return override(cfg, list(overrides))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """Inverse of :func:`to_dict` (lists back to tuples). Unknown keys are ignored, for forward compatibility
    and for config.json files of older versions (e.g. data.window_cc, data.window_mlo, run.num_workers,
    which were never read and have been removed)."""

    def build(cls: type, values: dict) -> Any:
        types = _field_types(cls)
        kwargs = {}
        for name, typ in types.items():
            if name not in values:
                continue
            v = values[name]
            if is_dataclass(typ):
                v = build(typ, v)
            elif typing.get_origin(typ) is tuple and isinstance(v, list):
                v = tuple(v)
            kwargs[name] = v
        return cls(**kwargs)

    return build(Config, d)


def save(cfg: Config, path: str | Path) -> None:
    """Write config.json atomically (a temp file in the same folder, then os.replace)."""
    from mvmammo.atomic import write_text

    write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")


def load(path: str | Path) -> Config:
    return from_dict(json.loads(Path(path).read_text()))
