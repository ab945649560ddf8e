"""UMT, Uni-Modal Teacher (Du et al., ICML 2023, "On uni-modal feature learning in supervised multi-modal
learning"; methods.md section 4.9): the two-view student learns each view's features from a uni-view teacher.

    L = L_task(out) + weight * sum_{v in cc, mlo} MSE(h_v^teacher, h_v^student)

L_task is the config's plain task loss (benign + malignant BCE); MSE is the mean over the breasts and the
fc_dim features of view v; weight = methods.umt.weight (10, the reference value). h_v is the per-view FC
output (B, fc_dim), the features before fusion. The teachers are the best.pt of two uni-view runs
(methods.umt.teacher_cc / teacher_mlo: run folders of model.family=uni_cc / uni_mlo; the experiment that
trains them is not part of this method), loaded with weights only, in eval mode (BatchNorm running
statistics, no input noise), frozen, on the student's device, and run on the same augmented batch.

Adaptations and notes:
  - The student's h_v is taken UNMASKED: the model's output h_v is multiplied by the view mask (modality
    dropout, missing views), so a forward hook on each view's FC keeps the unmasked output. A breast whose view
    v is missing (data.missing_view=mask: batch "present") is left out of view v's MSE; a view that modality
    dropout drops still distils (its image is there).
  - The teacher's architecture comes from its own config.json (model section; its family must be uni_<view>
    and its fc_dim the student's, or the MSE has no meaning); without config.json the student's model section
    with family uni_<view> is used. Only the teacher's <view>.* tensors are read (its aux heads, if any, are
    not needed).
  - Works with Joint, Shared and Split (each has per-view FCs); uni-view families are refused.
  - Binary labels: nothing class-specific; the teacher's features are matched whatever the label.
  - Resume: no state; the teachers are reloaded from their best.pt at every start (they do not change).
Logged per step in the loss dict: loss_task (the plain loss), umt_mse_cc, umt_mse_mlo.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from mvmammo import config as config_mod
from mvmammo.config import Config
from mvmammo.errors import MvError
from mvmammo.models.registry import build_model
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.methods.base import Method, register_method

VIEWS = ("cc", "mlo")
TWO_VIEW = ("joint", "shared", "split")


class TeacherError(MvError):
    """A teacher run folder that cannot serve as UMT's uni-view teacher; the message says what to do."""


def load_teacher(run: str, view: str, student: Config, in_channels: int) -> torch.nn.Module:
    """The uni-view model of ``run``/best.pt, in eval mode and frozen (CPU)."""
    key = f"methods.umt.teacher_{view}={run}"
    folder = Path(run)
    path = folder / "best.pt"
    if not path.is_file():
        raise TeacherError(f"{key}: no best.pt in that folder; train the uni-view teacher first (mvmammo train "
                           f"model.family=uni_{view} run.out={run}) or fix the path")
    mcfg = replace(student.model, family=f"uni_{view}")
    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        try:
            mcfg = config_mod.load(cfg_path).model
        except (ValueError, TypeError, KeyError) as exc:
            raise TeacherError(f"{key}: {cfg_path} is unreadable ({exc}); restore it or retrain the teacher") from None
        if mcfg.family != f"uni_{view}":
            raise TeacherError(f"{key}: that run is model.family={mcfg.family}; the {view.upper()} teacher must be "
                               f"a uni_{view} run")
        if mcfg.fc_dim != student.model.fc_dim:
            raise TeacherError(f"{key}: teacher model.fc_dim={mcfg.fc_dim} but the student has "
                               f"{student.model.fc_dim}; the features must have the same size")
    mcfg = replace(mcfg, aux_heads=False, fusion_gate="none", input_noise_std=0.0)
    teacher = build_model(mcfg, in_channels=in_channels)
    state = ckpt.load(path)["model"]
    ckpt.load_model_state(teacher, {k: v for k, v in state.items() if k.startswith(f"{view}.")}, path=path)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def feature_mse(teacher_h: torch.Tensor, student_h: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
    """Mean over breasts (those with the view present) and features of (teacher - student)^2; 0 if none."""
    per = ((student_h.float() - teacher_h.float()) ** 2).mean(1)  # (B,)
    if present is None:
        return per.mean()
    w = (present != 0).float()
    return (per * w).sum() / w.sum().clamp(min=1.0)


class _Teachers:
    """Hook: the teachers follow the student to its device when training starts."""

    def __init__(self, method: "UMT"):
        self.method = method

    def on_train_start(self, ctx) -> dict:
        device = next(ctx.model.parameters()).device
        for v, t in self.method.teachers.items():
            self.method.teachers[v] = t.to(device)
        return {}


@register_method("umt")
class UMT(Method):
    """The plain loss plus the feature distillation from two uni-view teachers."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.teachers: dict[str, torch.nn.Module] = {}
        self._h: dict[str, torch.Tensor] = {}  # the last forward's unmasked per-view features (B, fc_dim)

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        out = []
        if cfg.model.family not in TWO_VIEW:
            out.append(f"model.family={cfg.model.family}: reg.method=umt distils two views into a two-view model; "
                       f"use one of {', '.join(TWO_VIEW)}")
        u = cfg.methods.umt
        for v in VIEWS:
            if not getattr(u, f"teacher_{v}"):
                out.append(f"methods.umt.teacher_{v} is empty: give the run folder of a trained uni_{v} model "
                           "(its best.pt is the teacher)")
        if not (math.isfinite(u.weight) and u.weight >= 0):
            out.append(f"methods.umt.weight={u.weight}: must be a finite number >= 0 (the reference 10)")
        return out

    def prepare_model(self, model: torch.nn.Module) -> None:
        u = self.cfg.methods.umt
        for v in VIEWS:
            self.teachers[v] = load_teacher(getattr(u, f"teacher_{v}"), v, self.cfg, model.in_channels)
            model.view_fc(v).register_forward_hook(self._keep(v))

    def _keep(self, view: str):
        def hook(module, inputs, output):
            self._h[view] = output  # (B, fc_dim), before the view mask multiplies it

        return hook

    def hooks(self) -> list:
        return [_Teachers(self)]

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        losses = dict(ctx.task(out, batch, self.cfg))
        present = batch.get("present")  # (B, 2) or None
        autocast = torch.autocast(batch["cc"].device.type, dtype=torch.bfloat16,
                                  enabled=self.cfg.run.precision == "bf16")
        mse = {}
        for i, v in enumerate(VIEWS):
            student = self._h.pop(v, None)
            if student is None:
                raise MvError(f"reg.method=umt: the model's {v}.fc did not run in this step's forward "
                              f"(family {self.cfg.model.family}); UMT needs the per-view features")
            with torch.no_grad(), autocast:
                teacher = self.teachers[v].encode(**{v: batch[v]})[f"h_{v}"]
            mse[v] = feature_mse(teacher, student, None if present is None else present[:, i])
        losses["loss_task"] = losses["loss"]
        losses["loss"] = losses["loss"] + self.cfg.methods.umt.weight * (mse["cc"] + mse["mlo"])
        losses["umt_mse_cc"], losses["umt_mse_mlo"] = mse["cc"], mse["mlo"]
        return losses
