"""Regularizers that make a two-view model use both views: modality dropout, split learning rates,
pretraining with head-only fine-tuning (docs/regularizers.md)."""
import json
from dataclasses import replace

import pytest
import torch

from mvmammo.config import ModelConfig, RegularizerConfig, resolve
from mvmammo.models import build_model, parameter_group
from mvmammo.models.multiview import JointResNet
from mvmammo.training.methods import moddrop as regularizers
from mvmammo.training.loop import train
from mvmammo.training.optim import build_optimizer, group_of
from mvmammo.training.methods.pretrain import PretrainError, apply_finetune, load_pretrained
from mvmammo.training.tasks import bce_pair

from conftest import tiny_overrides
from mvmammo.training.checkpoint import load as ckpt_load

N = 200_000  # samples for the rate checks: binomial std of a rate <= 0.0012


def _mask(reg, n=N, seed=0):
    return regularizers.view_mask(reg, n, torch.Generator().manual_seed(seed), torch.device("cpu"))


@pytest.mark.parametrize("both", ["allowed", "exclude"])
def test_moddrop_rates_match_config(both):
    reg = RegularizerConfig(moddrop_cc=0.3, moddrop_mlo=0.6, moddrop_both=both)
    keep, weight = _mask(reg)
    dropped = keep == 0
    assert dropped[:, 0].float().mean() == pytest.approx(0.3, abs=0.01)
    assert dropped[:, 1].float().mean() == pytest.approx(0.6, abs=0.01)
    both_dropped = dropped.all(1)
    assert both_dropped.float().mean() == pytest.approx(0.18, abs=0.01)  # independent draws
    if both == "exclude":  # exactly the both-dropped samples get weight 0
        assert torch.equal(weight == 0, both_dropped)
    else:
        assert weight is None


def test_moddrop_resample_never_drops_both_and_has_documented_marginals():
    q_cc, q_mlo = 0.5, 0.8
    keep, weight = _mask(RegularizerConfig(moddrop_cc=q_cc, moddrop_mlo=q_mlo))  # default: resample
    assert weight is None
    dropped = keep == 0
    assert not dropped.all(1).any()
    z = 1 - q_cc * q_mlo
    assert dropped[:, 0].float().mean() == pytest.approx(q_cc * (1 - q_mlo) / z, abs=0.01)
    assert dropped[:, 1].float().mean() == pytest.approx(q_mlo * (1 - q_cc) / z, abs=0.01)


@pytest.mark.parametrize("both", ["allowed", "resample"])
def test_inverted_rescaling_keeps_the_expected_representation(both):
    keep, _ = _mask(RegularizerConfig(moddrop_cc=0.4, moddrop_mlo=0.7, moddrop_rescale="inverted",
                                      moddrop_both=both))
    assert keep.mean(0).tolist() == pytest.approx([1.0, 1.0], abs=0.02)


def test_moddrop_is_deterministic_under_a_seed_and_off_when_rates_are_zero():
    reg = RegularizerConfig(moddrop_cc=0.5, moddrop_mlo=0.5)
    assert torch.equal(_mask(reg, 1000, seed=7)[0], _mask(reg, 1000, seed=7)[0])
    assert not torch.equal(_mask(reg, 1000, seed=7)[0], _mask(reg, 1000, seed=8)[0])
    assert _mask(RegularizerConfig(), 10) == (None, None)
    with pytest.raises(ValueError, match="drop rates"):
        _mask(RegularizerConfig(moddrop_cc=1.5), 10)
    with pytest.raises(ValueError, match="below 1"):
        _mask(RegularizerConfig(moddrop_cc=1.0, moddrop_mlo=1.0), 10)


def test_excluded_samples_do_not_reach_the_loss():
    logits = torch.randn(4, 2, requires_grad=True)
    y = torch.tensor([[0, 1], [1, 0], [0, 0], [1, 1]]).float()
    w = torch.tensor([1.0, 0.0, 1.0, 1.0])
    loss = bce_pair(logits, y, w)["loss"]
    keep = [0, 2, 3]
    assert float(loss.detach()) == pytest.approx(float(bce_pair(logits[keep], y[keep])["loss"].detach()), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[1] == 0)


def test_split_lrs_and_aux_heads_share_one_group_rule():
    model = build_model(ModelConfig(family="joint", width=4, aux_heads=True), in_channels=3)
    optim = resolve("default", ["optim.lr=1e-3", "optim.alpha_cc=0.5", "optim.alpha_mlo=-1",
                                "optim.alpha_shared=0.25"]).optim
    opt = build_optimizer(model, optim)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"cc": 1e-3 * 10 ** 0.5, "mlo": 1e-4, "shared": 1e-3 * 10 ** 0.25})
    ids = {g["name"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    for name, p in model.named_parameters():
        assert group_of(name) == parameter_group(name)
        assert id(p) in ids[group_of(name)], name
    assert parameter_group("aux_cc.fc.weight") == "cc" and parameter_group("aux_mlo.head.bias") == "mlo"


def test_training_run_logs_split_lrs_and_realised_drop_rates_and_never_drops_in_eval(tiny_cohort, tmp_path,
                                                                                      monkeypatch):
    seen = []  # (training mode, mask given) of every forward
    real = JointResNet.forward

    def spy(self, cc=None, mlo=None, view_mask=None):
        seen.append((self.training, view_mask is not None))
        return real(self, cc, mlo, view_mask=view_mask)

    monkeypatch.setattr(JointResNet, "forward", spy)
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "md", **{
        "optim.epochs": 1, "optim.alpha_mlo": -1, "reg.moddrop_cc": 0.3, "reg.moddrop_mlo": 0.5,
        "reg.moddrop_both": "exclude", "run.grad_norms": "false", "run.max_steps": 4}))
    train(cfg)
    epoch = [json.loads(x) for x in (tmp_path / "md" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "epoch"][0]
    assert epoch["lr_cc"] == pytest.approx(1e-3) and epoch["lr_mlo"] == pytest.approx(1e-4)
    assert epoch["lr_shared"] == pytest.approx(1e-3)
    assert epoch["moddrop_samples"] == 4 * cfg.optim.batch_size  # every training sample, 4 full batches
    assert 0 < epoch["moddrop_rate_mlo"] < 1 and 0 <= epoch["moddrop_rate_cc"] < 1
    assert {mask for training, mask in seen if training} == {True}
    assert {mask for training, mask in seen if not training} == {False}


def _fake_uni_run(folder, family, width=4, seed=0):
    """A run folder with a best.pt of a (randomly initialised) uni-view model: all load_pretrained reads."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(family=family, width=width), in_channels=3)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the check covers the buffers too
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.uniform_(-0.1, 0.1)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "epoch": 0}, folder / "best.pt")
    (folder / "config.json").write_text(json.dumps({"model": {"family": family, "backbone": "resnet22",
                                                              "width": width, "fc_dim": 512}}))
    return model.state_dict()


def test_pretrained_head_only_finetune_keeps_columns_bit_identical(tiny_cohort, tmp_path):
    cc = _fake_uni_run(tmp_path / "uni_cc", "uni_cc", seed=1)
    mlo = _fake_uni_run(tmp_path / "uni_mlo", "uni_mlo", seed=2)
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "ft", **{
        "optim.epochs": 1, "reg.pretrained_cc": tmp_path / "uni_cc", "reg.pretrained_mlo": tmp_path / "uni_mlo",
        "reg.finetune": "head", "run.max_steps": 4}))
    train(cfg)
    after = ckpt_load(tmp_path / "ft" / "last.pt")["model"]
    source = {**{k: v for k, v in cc.items() if not k.startswith("cc.head")},
              **{k: v for k, v in mlo.items() if not k.startswith("mlo.head")}}
    assert len(source) > 20
    for k, v in source.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(after[k], v), k  # weights and BatchNorm statistics
    torch.manual_seed(cfg.run.seed)  # the loop's initialisation, to show that the head did train
    first = build_model(cfg.model, in_channels=3)
    assert not torch.equal(after["shared.head.weight"], first.state_dict()["shared.head.weight"])


def test_pretraining_other_families_and_clear_errors(tmp_path):
    cc = _fake_uni_run(tmp_path / "uni_cc", "uni_cc", seed=1)
    mlo = _fake_uni_run(tmp_path / "uni_mlo", "uni_mlo", seed=2)
    base = resolve("default", [f"reg.pretrained_cc={tmp_path / 'uni_cc'}", f"reg.pretrained_mlo={tmp_path / 'uni_mlo'}",
                               "model.width=4", "run.progress=false"])
    # Shared: the one column from the CC run, each FC from its own run.
    cfg = replace(base, model=replace(base.model, family="shared"))
    shared = build_model(cfg.model, 3)
    load_pretrained(shared, cfg)
    s = shared.state_dict()
    columns = [k for k in s if k.startswith("shared.column.")]
    assert columns and all(torch.equal(s[k], cc["cc." + k[len("shared."):]]) for k in columns)
    assert torch.equal(s["mlo.fc.weight"], mlo["mlo.fc.weight"])
    # Split with aux heads: per-view heads and the blending heads start as the uni-view models.
    cfg = replace(base, model=replace(base.model, family="split", aux_heads=True))
    split = build_model(cfg.model, 3)
    load_pretrained(split, cfg)
    s = split.state_dict()
    assert torch.equal(s["cc.head.weight"], cc["cc.head.weight"])
    assert torch.equal(s["aux_mlo.fc.weight"], mlo["mlo.fc.weight"])
    # Head-only: only output layers train, and build_optimizer sees it.
    joint = build_model(replace(base.model, family="joint"), 3)
    frozen = apply_finetune(joint, replace(base, reg=replace(base.reg, finetune="head")))
    opt = build_optimizer(joint, base.optim)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert frozen and all(id(p) not in trained for n, p in joint.named_parameters() if n in frozen)
    assert [g["name"] for g in opt.param_groups] == ["shared"]
    # Errors: no best.pt; wrong width.
    missing = replace(base, reg=replace(base.reg, pretrained_cc=str(tmp_path / "nowhere")))
    with pytest.raises(PretrainError, match="no best.pt"):
        load_pretrained(build_model(base.model, 3), missing)
    wide = replace(base, model=replace(base.model, width=8))
    with pytest.raises(PretrainError, match="shapes do not fit.*width=4"):
        load_pretrained(build_model(wide.model, 3), wide)
    with pytest.raises(PretrainError, match="no MLO view"):
        load_pretrained(build_model(replace(base.model, family="uni_cc"), 3), base)
