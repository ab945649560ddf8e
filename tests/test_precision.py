"""bf16 autocast against fp32 (CPU). Column gradients of a freshly initialised pre-activation ResNet are
chaotically sensitive to tiny input changes, so a fixed tolerance on them is meaningless: the bf16 gradient
is compared with the spread that a 1e-2 input perturbation already causes in fp32."""
import torch

from mvmammo.config import ModelConfig
from mvmammo.models.registry import build_model


def _grads(model, x, y, t, bf16, eps=0.0, seed=1):
    model.zero_grad()
    gen = torch.Generator().manual_seed(seed)
    xn = x + eps * torch.randn(x.shape, generator=gen)
    yn = y + eps * torch.randn(y.shape, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(xn, yn)
    logits = out["logits"].float()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, t).backward()
    groups = {}
    for n, p in model.named_parameters():
        groups.setdefault(n.split(".")[0], []).append(p.grad.flatten().clone())
    return logits.detach(), {k: torch.cat(v) for k, v in groups.items()}


def test_bf16_matches_fp32_within_its_noise():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="joint", width=4, input_noise_std=0.0), 3)
    x, y = torch.randn(8, 3, 64, 48), torch.randn(8, 3, 64, 48)
    t = (torch.rand(8, 2) < 0.3).float()
    l32, g32 = _grads(model, x, y, t, bf16=False)
    l16, g16 = _grads(model, x, y, t, bf16=True)
    _, gpert = _grads(model, x, y, t, bf16=False, eps=1e-2)
    assert torch.allclose(l16, l32, atol=5e-2)
    for group in g32:
        rel = lambda a: float((a - g32[group]).norm() / g32[group].norm())  # noqa: E731
        # bf16 moves the gradient no more than a 1e-2 input perturbation does in fp32 (with slack).
        assert rel(g16[group]) <= max(1.5 * rel(gpert[group]), 0.05), group
        cos = torch.nn.functional.cosine_similarity(g16[group], g32[group], dim=0)
        assert cos > 0.7, group


def test_precision_check_script_small_cpu(tmp_path):
    """benchmarks/check_precision.py (the GPU call's first step) runs on the CPU and passes against its baseline."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "check_precision.py"
    spec = importlib.util.spec_from_file_location("check_precision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    res = module.main(["--size", "small", "--device", "cpu", "--out", str(tmp_path)])
    assert (tmp_path / "precision.json").exists()
    assert res["pass"] is True
    assert res["rel_loss"] < 2e-2
    for g in ("cc", "mlo", "shared"):
        assert res[f"rel_grad_{g}"] <= 1.5 * res[f"rel_grad_{g}_fp32_noise_baseline"]
