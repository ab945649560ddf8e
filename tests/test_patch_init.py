"""`patches train --init FILE`: torchvision-layout files (old keys, 3-channel conv0, other classifiers), our own
run folders, the command end to end, and the one-line refusals."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import replace

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

from mvmammo.models.densenet import DenseNet, DenseNetConfig
from mvmammo.patches.init_weights import initial_state, read_init, resolve_arch
from mvmammo.patches.runs import write_model

# A torchvision-like source: 3 input channels, ImageNet-like classifier (10 classes, not our 4).
SRC = DenseNetConfig(growth=4, blocks=(1, 1), init_features=8, in_channels=3, num_classes=10)
OURS = DenseNetConfig(growth=4, blocks=(1, 1), init_features=8)          # what --growth 4 --blocks 1 1 ... asks


def random_model(cfg: DenseNetConfig, seed: int) -> DenseNet:
    """Random weights everywhere (BN affine and statistics too), so a wrong mapping would show in the outputs."""
    torch.manual_seed(seed)
    m = DenseNet(cfg)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
            elif isinstance(mod, torch.nn.Linear):
                mod.bias.uniform_(-0.5, 0.5)
    return m.eval()


def old_style(state: dict) -> dict:
    """Keys as in torchvision's ImageNet files: "denselayer1.norm.1.weight", a DataParallel prefix, and no
    num_batches_tracked counters (saved before BatchNorm had them)."""
    return {"module." + re.sub(r"(denselayer\d+\.)(norm|relu|conv)([12])\.", r"\1\2.\3.", k): v
            for k, v in state.items() if not k.endswith("num_batches_tracked")}


def torchvision_file(path, seed: int = 1, cfg: DenseNetConfig = SRC) -> DenseNet:
    src = random_model(cfg, seed)
    # torch's pre-zip serialisation, as in torchvision's ImageNet files
    torch.save(old_style(src.state_dict()), path, _use_new_zipfile_serialization=False)
    return src


def test_torchvision_file_folds_conv0_and_keeps_a_fresh_classifier(tmp_path):
    src = torchvision_file(tmp_path / "densenet.pth")
    saved = torch.load(tmp_path / "densenet.pth", weights_only=True)
    assert "module.features.denseblock1.denselayer1.norm.1.weight" in saved    # the old style really is on disk
    init = read_init(tmp_path / "densenet.pth")
    assert init.kind == "state_dict" and init.arch.in_channels == 3 and init.renamed == 20  # 2 dense layers x 10 tensors
    arch = resolve_arch(DenseNetConfig(), init)         # all defaults: the file's architecture, torchvision padding
    assert (arch.growth, arch.blocks, arch.init_features, arch.bn_size, arch.padding, arch.in_channels) == \
        (4, (1, 1), 8, 4, "torch", 1)
    rng = torch.get_rng_state()
    state, info = initial_state(init, arch, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)      # the caller's RNG stream is untouched
    ours = DenseNet(arch)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        # The same convolution on a grey patch replicated to 3 channels: features equal the source's.
        torch.testing.assert_close(ours.features(x), src.features(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=0)
    torch.manual_seed(5)
    fresh = DenseNet(arch)
    assert torch.equal(ours.classifier.weight, fresh.classifier.weight)
    assert torch.equal(ours.classifier.bias, fresh.classifier.bias)
    assert (info["classifier"], info["file_classes"], info["conv0_folded"]) == ("fresh", 10, True)
    assert info["tensors"] == len(saved) - 2           # every file tensor but the 10-class classifier
    assert info["sha256"] == hashlib.sha256((tmp_path / "densenet.pth").read_bytes()).hexdigest()


def test_a_four_class_file_loads_its_classifier(tmp_path):
    src = random_model(DenseNetConfig(growth=4, blocks=(1, 1), init_features=8, in_channels=3), seed=2)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "four.pth")    # new key style, under "state_dict"
    init = read_init(tmp_path / "four.pth")
    arch = resolve_arch(OURS, init)
    state, info = initial_state(init, arch, seed=0)
    ours = DenseNet(arch)
    ours.load_state_dict(state)
    ours.eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), src(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=0)
    assert info["classifier"] == "loaded" and info["renamed"] == 0


@pytest.mark.parametrize("padding", ["torch", "same"])
def test_our_run_folder_as_init(tmp_path, padding):
    cfg = DenseNetConfig(growth=4, blocks=(1, 1), init_features=8, bn_size=2, padding=padding)
    src = random_model(cfg, seed=3)
    write_model(tmp_path / "run", src, patch=32)
    for named in (tmp_path / "run", tmp_path / "run" / "best.pt"):
        init = read_init(named)
        assert init.kind == "checkpoint" and init.file == str((tmp_path / "run" / "best.pt").resolve())
        arch = resolve_arch(DenseNetConfig(), init)    # bn_size 2 and the padding come from the file
        assert arch == cfg
        state, info = initial_state(init, arch, seed=0)
        assert all(torch.equal(state[k], t) for k, t in src.state_dict().items())
        assert info["classifier"] == "loaded" and not info["conv0_folded"]
        ours = DenseNet(arch).eval()
        ours.load_state_dict(state)
        x = torch.randn(2, 1, 33, 33)      # odd size: "same" and "torch" padding differ here
        with torch.no_grad():
            assert torch.equal(ours(x), src(x))


def _patch_set(tmp_path):
    """The tiny annotated patch set of test_patches' resume test (32-px patches, all four classes)."""
    from mvmammo.cli import main
    from test_patches import _fixture_table

    table = _fixture_table(tmp_path, [(0, 1), (1, 0), (0, 0), (1, 1), (0, 0), (0, 1)])
    pd.DataFrame({"patient_id": ["P0", "P3", "P4", "P5", "P1"], "exam_id": ["P0", "P3", "P4", "P5", "P1"],
                  "side": "R", "view": "cc", "cls": ["malignant", "malignant", "benign", "malignant", "benign"],
                  "row": [50, 60, 80, 100, 70], "col": [50, 40, 60, 50, 45], "radius_px": 6}
                 ).to_csv(tmp_path / "ann.csv", index=False)
    assert main(["patches", "extract", str(table), "--out", str(tmp_path / "ps"), "--annotations",
                 str(tmp_path / "ann.csv"), "--patch", "32", "--quiet"]) == 0
    return tmp_path / "ps"


def test_train_command_with_init(tmp_path, capsys):
    from mvmammo.cli import main
    from mvmammo.training.checkpoint import load

    ps = _patch_set(tmp_path)
    src = torchvision_file(tmp_path / "densenet.pth")
    torchvision_file(tmp_path / "other.pth", seed=9)
    base = ["patches", "train", str(ps), "--init", str(tmp_path / "densenet.pth"), "--batch-size", "8", "--quiet"]
    capsys.readouterr()
    # No --growth/--blocks/--init-features: the file's architecture. lr 0 leaves the weights as initialised
    # (only BN statistics move in train mode), so the checkpoint shows what the run started from.
    assert main(base + ["--out", str(tmp_path / "z"), "--epochs", "1", "--lr", "0"]) == 0
    out = capsys.readouterr().out
    assert f"initialised from {(tmp_path / 'densenet.pth').resolve()}" in out
    assert "classifier fresh (10 classes in the file)" in out and "conv0 folded" in out
    z = load(tmp_path / "z" / "last.pt")
    assert z["arch"]["growth"] == 4 and z["arch"]["blocks"] == [1, 1] and z["arch"]["padding"] == "torch"
    assert torch.equal(z["model"]["features.conv0.weight"], src.features.conv0.weight.sum(1, keepdim=True))
    torch.manual_seed(0)                                 # --seed 0: the classifier a fresh run starts with
    assert torch.equal(z["model"]["classifier.weight"], DenseNet(DenseNetConfig.from_dict(z["arch"])).classifier.weight)

    # Exact resume with init: 1 epoch + 1 more == 2 epochs; the resumed run does not re-apply the file.
    assert main(base + ["--out", str(tmp_path / "a"), "--epochs", "2"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--epochs", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "densenet.pth").rename(tmp_path / "moved.pth")      # resuming does not need the file any more
    assert main(base + ["--out", str(tmp_path / "b"), "--epochs", "2"]) == 0
    assert "not re-applied" in capsys.readouterr().out
    (tmp_path / "moved.pth").rename(tmp_path / "densenet.pth")
    a, b = load(tmp_path / "a" / "last.pt")["model"], load(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["init"] == str((tmp_path / "densenet.pth").resolve())
    assert config["init_sha256"] == hashlib.sha256((tmp_path / "densenet.pth").read_bytes()).hexdigest()
    assert (config["growth"], config["blocks"], config["init_features"]) == (4, [1, 1], 8)

    # Another init file into the same run folder is refused (one line, exit 1).
    other = [str(tmp_path / "other.pth") if arg == str(tmp_path / "densenet.pth") else arg for arg in base]
    assert main(other + ["--out", str(tmp_path / "a"), "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "init" in err and len(err.strip().splitlines()) == 1


class _RunsCode:
    """Unpickling this would call os.system; it is only ever pickled (written), never loaded unsafely."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_bad_init_files_are_one_line_errors(tmp_path, capsys):
    from mvmammo.cli import main

    marker = tmp_path / "code_ran"
    # Protocol 2 (torch's own) reaches the os.system global in the unpickler; protocol 5 stops at its framing.
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"features.conv0.weight": _RunsCode(marker)}, protocol=2))
    (tmp_path / "evil5.pth").write_bytes(pickle.dumps({"features.conv0.weight": _RunsCode(marker)}, protocol=5))
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, tmp_path / "resnet.pth")
    (tmp_path / "damaged.pth").write_bytes(b"PK\x03\x04 truncated")
    torchvision_file(tmp_path / "densenet.pth")
    sd = random_model(SRC, seed=1).state_dict()
    sd["features.norm5.weight"] = sd["features.norm5.weight"][:-1]
    torch.save(sd, tmp_path / "misfit.pth")
    cases = [("missing.pth", [], "file not found"),
             ("evil.pth", [], "GLOBAL"),
             ("evil5.pth", [], "not loadable as plain tensors"),
             ("damaged.pth", [], "not loadable as plain tensors"),
             ("resnet.pth", [], "not a DenseNet"),
             ("misfit.pth", [], "features.norm5.weight"),
             ("densenet.pth", ["--growth", "8"], "asks for growth 8")]
    for name, extra, words in cases:
        out = tmp_path / f"run_{name}"
        code = main(["patches", "train", str(tmp_path / "no_patch_set"), "--out", str(out), "--init",
                     str(tmp_path / name), "--quiet"] + extra)
        err = capsys.readouterr().err
        assert code == 1, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (name, err)
        assert str(tmp_path / name) in lines[0]
        assert not out.exists()                         # refused before the run folder is made
    assert not marker.exists()


def test_run_folders_from_before_init_still_resume(tmp_path):
    from mvmammo.errors import MvError
    from mvmammo.patches.train import PatchTrainConfig, _check_config, _json_config

    cfg = PatchTrainConfig(patches="ps", out=str(tmp_path), growth=4, blocks=(1, 1), init_features=8)
    old = {k: v for k, v in _json_config(cfg).items() if k not in ("init", "padding", "init_sha256")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    _check_config(tmp_path, cfg)                       # the keys it lacks read as their implicit values
    assert json.loads((tmp_path / "config.json").read_text())["init"] == ""
    with pytest.raises(MvError, match="other settings"):
        _check_config(tmp_path, replace(cfg, init="/some/file.pth"), "ab" * 32)
