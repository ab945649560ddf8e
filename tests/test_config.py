import pytest

from mvmammo.config import Config, ConfigError, from_dict, load, override, resolve, save, to_dict


def test_defaults_are_frozen():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_override_types():
    cfg = override(Config(), ["optim.lr=3e-4", "data.size_cc=(256, 192)", "run.compile=true",
                              "optim.freeze=cc.,mlo.", "model.family=shared"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.size_cc == (256, 192)
    assert cfg.run.compile is True
    assert cfg.optim.freeze == ("cc.", "mlo.")
    assert cfg.model.family == "shared"


@pytest.mark.parametrize("bad", ["optim.nope=1", "nosection.lr=1", "optim.lr=abc", "run.compile=maybe",
                                 "data.size_cc=(1,2,3)", "lr=1"])
def test_bad_overrides_are_named(bad):
    with pytest.raises(ConfigError) as err:
        override(Config(), [bad])
    assert bad.split("=")[0] in str(err.value)


def test_presets_then_overrides():
    cfg = resolve("cpu-demo", ["optim.epochs=3"])
    assert cfg.model.width == 8 and cfg.optim.epochs == 3
    with pytest.raises(ConfigError):
        resolve("nonexistent")


def test_roundtrip(tmp_path):
    cfg = resolve("paper-full", ["reg.blend_weights=(0.2, 0.3, 0.5)"])
    save(cfg, tmp_path / "c.json")
    assert load(tmp_path / "c.json") == cfg
    assert from_dict(to_dict(cfg)) == cfg
