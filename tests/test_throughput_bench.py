"""benchmarks/throughput.py in its small CPU mode: runs in seconds and reports the structure we record."""
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402


def test_small_mode_runs_and_reports(tmp_path):
    report = throughput.main(["--size", "small", "--device", "cpu", "--no-anchor", "--breasts", "4", "--steps", "1",
                              "--warmup", "1", "--tta", "2", "--width", "4",
                              "--configs", "fp32-eager-b2,fp32-eager-b2-infer", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["info"]["size"] == "small" and len(saved["results"]) == 2
    train, infer = report["results"]
    assert "error" not in train and "error" not in infer, report["results"]
    for key in ("breasts_per_s", "model_breasts_per_s", "data_breasts_per_s", "aug_breasts_per_s", "peak_mem_gib"):
        assert key in train
    assert train["breasts_per_s"] > 0 and train["aug_breasts_per_s"] > 0 and infer["breast_windows_per_s"] > 0


def test_ratios_to_anchor():
    anchor = {"runs": [{"name": "bf16-cl-compile-b16", "breasts_per_s": 200.0},
                       {"name": "bf16-cl-eager-b4", "breasts_per_s": 100.0},
                       {"name": "bf16-cl-compile-infer-b16", "breasts_per_s": 500.0}]}
    res = [dict(throughput.parse("bf16-cl-eager-b4"), train=True, breasts_per_s=150.0, model_breasts_per_s=160.0),
           dict(throughput.parse("bf16-cl-compile-b16-infer"), train=False, breasts_per_s=100.0,
                breast_windows_per_s=1000.0)]
    throughput.ratios(res, anchor)
    assert res[0]["ratio_anchor_best"] == 0.75 and res[0]["ratio_anchor_same"] == 1.5
    assert res[1]["ratio_anchor_best"] == 2.0 and res[1]["ratio_anchor_same"] == 2.0
    assert "x anchor best" in throughput.table(res, anchor)
