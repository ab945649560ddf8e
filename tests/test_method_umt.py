"""UMT (training/methods/umt.py): feature distillation from two uni-view teachers, values checked by hand."""
import json
import math

import pytest
import torch

from conftest import tiny_overrides
from mvmammo import config as config_mod
from mvmammo.config import resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.umt import UMT, TeacherError, feature_mse, load_teacher
from mvmammo.training.tasks import standard

WIDTH, FC = 4, 16


def _teacher_run(folder, view, seed):
    """A run folder with config.json and a best.pt of a (random) uni-view model."""
    cfg = resolve("default", [f"model.family=uni_{view}", f"model.width={WIDTH}", f"model.fc_dim={FC}"])
    torch.manual_seed(seed)
    model = build_model(cfg.model, in_channels=3)
    folder.mkdir(parents=True)
    config_mod.save(cfg, folder / "config.json")
    torch.save({"model": model.state_dict(), "epoch": 0}, folder / "best.pt")
    return model.eval()


def _student_cfg(tmp_path, family="joint", **extra):
    over = {"reg.method": "umt", "model.family": family, "model.width": WIDTH, "model.fc_dim": FC,
            "methods.umt.teacher_cc": tmp_path / "t_cc", "methods.umt.teacher_mlo": tmp_path / "t_mlo", **extra}
    return resolve("default", [f"{k}={v}" for k, v in over.items()])


def test_feature_mse_by_hand():
    t = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    s = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    # per breast: ((1 + 4) / 2, (0 + 4) / 2) = (2.5, 2.0); mean 2.25; only the first breast present: 2.5
    assert float(feature_mse(t, s, None)) == pytest.approx(2.25)
    assert float(feature_mse(t, s, torch.tensor([1.0, 0.0]))) == pytest.approx(2.5)
    assert float(feature_mse(t, s, torch.tensor([0.0, 0.0]))) == 0.0  # no breast with the view: no term


def test_loss_uses_unmasked_features_and_a_student_equal_to_its_teacher_has_zero_mse(tmp_path):
    t_cc = _teacher_run(tmp_path / "t_cc", "cc", seed=1)
    t_mlo = _teacher_run(tmp_path / "t_mlo", "mlo", seed=2)
    cfg = _student_cfg(tmp_path)
    torch.manual_seed(3)
    student = build_model(cfg.model, in_channels=3)
    # The student's CC column and FC are the CC teacher's (same parameter names): h_cc^student = h_cc^teacher.
    student.load_state_dict({k: v for k, v in t_cc.state_dict().items() if not k.startswith("cc.head.")},
                            strict=False)
    method = UMT(cfg)
    method.prepare_model(student)
    assert all(not p.requires_grad for t in method.teachers.values() for p in t.parameters())
    assert all(not t.training for t in method.teachers.values())
    student.eval()  # no input noise, BatchNorm running statistics: the same function as the teachers
    cc, mlo = torch.randn(4, 3, 64, 48), torch.randn(4, 3, 64, 48)
    batch = {"cc": cc, "mlo": mlo, "benign": torch.tensor([0, 1, 0, 0]), "malignant": torch.tensor([1, 0, 0, 1])}
    mask = torch.tensor([[0.0, 1.0]] * 4)  # CC dropped for every breast: out["h_cc"] is all zeros
    out = student(cc, mlo, view_mask=mask)
    assert float(out["h_cc"].detach().abs().max()) == 0.0
    ctx = type("Ctx", (), {"task": staticmethod(standard)})()
    losses = method.loss(out, batch, ctx)
    # CC: the unmasked student features equal the teacher's, so the MSE is 0 (the masked ones would not be).
    assert float(losses["umt_mse_cc"].detach()) == 0.0
    with torch.no_grad():
        mse_mlo = ((t_mlo.encode(mlo=mlo)["h_mlo"] - student.encode(cc, mlo)["h_mlo"]) ** 2).mean()
    assert float(losses["umt_mse_mlo"].detach()) == pytest.approx(float(mse_mlo), rel=1e-5)
    plain = standard(out, batch)["loss"].detach()
    assert float(losses["loss_task"].detach()) == pytest.approx(float(plain))
    assert float(losses["loss"].detach()) == pytest.approx(float(plain) + 10.0 * float(mse_mlo), rel=1e-5)
    losses["loss"].backward()
    assert student.mlo["fc"].weight.grad is not None
    assert all(p.grad is None for t in method.teachers.values() for p in t.parameters())


def test_teacher_errors_are_one_line_and_say_what_to_do(tmp_path):
    cfg = _student_cfg(tmp_path)
    with pytest.raises(TeacherError, match="no best.pt.*train the uni-view teacher first"):
        load_teacher(str(tmp_path / "nowhere"), "cc", cfg, 3)
    _teacher_run(tmp_path / "wrong", "mlo", seed=0)  # an MLO run given as the CC teacher
    with pytest.raises(TeacherError, match="must be a uni_cc run"):
        load_teacher(str(tmp_path / "wrong"), "cc", cfg, 3)
    with pytest.raises(TeacherError, match="fc_dim"):
        load_teacher(str(tmp_path / "wrong"), "mlo", _student_cfg(tmp_path, **{"model.fc_dim": 8}), 3)


def test_problems_refuse_uni_view_and_missing_teachers():
    base = ["reg.method=umt", "methods.umt.teacher_cc=a", "methods.umt.teacher_mlo=b"]
    assert method_problems(resolve("default", base)) == []
    for family in ("shared", "split"):
        assert method_problems(resolve("default", base + [f"model.family={family}"])) == []
    uni = resolve("default", base + ["model.family=uni_mlo"])
    assert any("model.family=uni_mlo" in p for p in method_problems(uni))
    probs = method_problems(resolve("default", ["reg.method=umt"]))
    assert any("methods.umt.teacher_cc is empty" in p for p in probs)
    assert any("methods.umt.teacher_mlo is empty" in p for p in probs)
    assert any("methods.umt.weight" in p for p in method_problems(resolve("default", base + ["methods.umt.weight=-1"])))


def test_training_with_two_trained_teachers_logs_finite_mse(tiny_cohort, tmp_path):
    for v in ("cc", "mlo"):
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / f"uni_{v}", **{
            "model.family": f"uni_{v}", "optim.epochs": 1, "run.max_steps": 1})))
    run = tmp_path / "umt"
    train(resolve("default", tiny_overrides(tiny_cohort, run, **{
        "optim.epochs": 1, "run.max_steps": 3, "reg.method": "umt", "model.family": "shared",
        "methods.umt.teacher_cc": tmp_path / "uni_cc", "methods.umt.teacher_mlo": tmp_path / "uni_mlo"})))
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["kind"] == "step"]
    assert len(steps) == 3
    for s in steps:
        assert math.isfinite(s["umt_mse_cc"]) and math.isfinite(s["umt_mse_mlo"]) and s["umt_mse_cc"] > 0
        assert s["loss"] == pytest.approx(s["loss_task"] + 10.0 * (s["umt_mse_cc"] + s["umt_mse_mlo"]), rel=1e-5)
    assert (run / "DONE").exists()
