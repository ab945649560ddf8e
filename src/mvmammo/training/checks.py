"""A training config checked as a whole before anything is written (no run folder for an invalid config).

Each problem is one phrase naming the key, the value and what is accepted; :func:`check` raises one
:class:`~mvmammo.errors.UsageError` listing them all, so a user fixes a command line in one go.
"""
from __future__ import annotations

import math

from mvmammo.config import Config
from mvmammo.errors import UsageError

CHOICES = {
    ("data", "sampling"): ("exam", "breast"),
    ("data", "missing_view"): ("drop", "mask"),
    ("data", "format"): ("store", "memmap"),
    ("run", "precision"): ("fp32", "bf16"),
    ("reg", "moddrop_rescale"): ("none", "inverted"),
    ("reg", "moddrop_both"): ("allowed", "exclude", "resample"),
    ("reg", "finetune"): ("all", "head"),
    ("reg", "blend"): ("none", "fixed", "offline"),
    ("reg", "blend_metric"): ("loss", "auc"),
    ("model", "fusion_gate"): ("none", "entropy", "energy"),
}


def problems(cfg: Config) -> list[str]:
    """Every problem of ``cfg`` as 'key: what is wrong; what is accepted'."""
    from mvmammo.models.backbones import backbone_names
    from mvmammo.models.registry import MODEL_FAMILIES, build_model  # noqa: F401 (import registers families)
    from mvmammo.models import multiview  # noqa: F401

    out: list[str] = []
    o, d, m, r, g = cfg.optim, cfg.data, cfg.model, cfg.run, cfg.reg

    def need(ok: bool, msg: str) -> None:
        if not ok:
            out.append(msg)

    need(math.isfinite(o.lr) and o.lr > 0, f"optim.lr={o.lr}: must be a finite number > 0 (e.g. 1e-4)")
    need(o.batch_size >= 1, f"optim.batch_size={o.batch_size}: must be >= 1")
    need(o.epochs >= 0, f"optim.epochs={o.epochs}: must be >= 0")
    need(math.isfinite(o.weight_decay) and o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay}: must be >= 0")
    need(math.isfinite(o.grad_clip) and o.grad_clip >= 0, f"optim.grad_clip={o.grad_clip}: must be >= 0 (0 = off)")
    for k in ("alpha_shared", "alpha_cc", "alpha_mlo"):
        need(math.isfinite(getattr(o, k)), f"optim.{k}={getattr(o, k)}: must be finite")
    need(m.family in MODEL_FAMILIES, f"model.family={m.family!r}: unknown; one of {', '.join(MODEL_FAMILIES)}")
    need(m.backbone in backbone_names(), f"model.backbone={m.backbone!r}: unknown; one of {', '.join(backbone_names())}")
    need(m.width >= 1, f"model.width={m.width}: must be >= 1")
    need(m.fc_dim >= 1, f"model.fc_dim={m.fc_dim}: must be >= 1")
    need(m.input_noise_std >= 0, f"model.input_noise_std={m.input_noise_std}: must be >= 0")
    for key in ("size_cc", "size_mlo"):
        v = getattr(d, key)
        need(all(x >= 8 for x in v), f"data.{key}={tuple(v)}: each side must be >= 8 px")
    need(d.neg_ratio >= 0 and math.isfinite(d.neg_ratio), f"data.neg_ratio={d.neg_ratio}: must be >= 0")
    need(0 <= d.holdout_fraction < 1, f"data.holdout_fraction={d.holdout_fraction}: must be in [0, 1)")
    need(d.aug_noise_px >= 0, f"data.aug_noise_px={d.aug_noise_px}: must be >= 0")
    need(d.synth_breasts >= 4 or bool(d.table), f"data.synth_breasts={d.synth_breasts}: must be >= 4")
    for k in ("moddrop_cc", "moddrop_mlo"):
        need(0 <= getattr(g, k) < 1, f"reg.{k}={getattr(g, k)}: a drop rate must be in [0, 1)")
    need(r.tta >= 0, f"run.tta={r.tta}: must be >= 0 (0 = centre window only)")
    need(r.max_steps >= 0, f"run.max_steps={r.max_steps}: must be >= 0 (0 = no limit)")
    need(r.device in ("auto", "cpu") or r.device.startswith("cuda") or r.device == "mps",
         f"run.device={r.device!r}: one of auto, cpu, cuda, cuda:N")
    if r.device.startswith("cuda"):
        import torch

        need(torch.cuda.is_available(), f"run.device={r.device}: this machine has no CUDA GPU visible to PyTorch; "
                                        "use run.device=cpu (or auto)")
    from mvmammo.training.methods import method_problems

    out.extend(method_problems(cfg))
    need(m.fusion_gate == "none" or not m.family.startswith("uni_"),
         f"model.fusion_gate={m.fusion_gate}: a gate combines two views; family {m.family} reads one")
    for (section, name), allowed in CHOICES.items():
        if hasattr(getattr(cfg, section), name):
            v = getattr(getattr(cfg, section), name)
            need(v in allowed, f"{section}.{name}={v!r}: one of {', '.join(allowed)}")
    return out


def check(cfg: Config) -> None:
    """Raise UsageError naming every problem of ``cfg`` (nothing has been written yet)."""
    found = problems(cfg)
    if found:
        raise UsageError("invalid config: " + "; ".join(found))
