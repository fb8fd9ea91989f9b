"""The public API: lazy import, finexl.explain on the shipped models (value tests), presets, the error contract."""

import json
import subprocess
import sys
from importlib.util import find_spec

import pytest

import finexl
from finexl.cli import main
from finexl.errors import ConfigError, FinexlError

# small but enough: the shipped red LoRA's colour change clears its null with 32 pairs
FAST = dict(samples=32, n_bootstrap=100, n_null=100)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.mark.skipif(find_spec("torchvision") is not None, reason="the open_clip extra imports torchvision up front")
def test_import_finexl_loads_no_torch_and_binds_the_function():
    code = "import sys, finexl; assert 'torch' not in sys.modules, 'torch imported'; print(finexl.__version__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    import finexl.explanation.pipeline  # noqa: F401  (the subpackage being imported must not shadow the function)

    assert callable(finexl.explain) and finexl.explain.__module__ == "finexl.explanation.pipeline"
    assert {"explain", "Explanation", "train_lora", "train_dreambooth", "load_lora", "run_bench"} <= set(dir(finexl))
    with pytest.raises(AttributeError):
        finexl.no_such_thing  # noqa: B018


def test_explain_puts_the_red_loras_colour_first_and_changed(cache, tmp_path):
    e = finexl.explain(lora="data/toy_loras/red", cache_dir=cache, **FAST)
    assert isinstance(e, finexl.Explanation)
    assert e.changed == ["colour"] and e.aspects[0].aspect == "colour"
    colour = e.aspect("colour")
    assert colour.direction == "increase" and colour.concept in ("red", "scarlet", "crimson")
    assert colour.interval[0] > colour.threshold > 0 and 0.3 < colour.score <= 1
    assert e.settings["preset"] == "toy" and e.settings["samples"] == 32
    assert "CHANGED" in e.table() and "colour" in e.table().splitlines()[1]
    path = e.to_json(tmp_path / "explanation.json")
    again = finexl.Explanation.from_json(path)
    assert again == e and json.loads(path.read_text())["aspects"][0]["aspect"] == "colour"


def test_the_base_against_itself_marks_nothing(cache):
    e = finexl.explain(model="data/toy_sd", cache_dir=cache, **FAST)
    assert e.changed == [] and e.divergence["norm"] < 1e-9
    assert all(a.threshold is not None and a.threshold > 0 for a in e.aspects)


def test_a_base_of_ones_own_names_its_parts(tmp_path, tiny_pipeline_dir, capsys):
    argv = ["explain", "--base", str(tiny_pipeline_dir), "--lora", "data/toy_loras/red", "--cache", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--clip, --concepts, --prompts" in err and "--concepts real" in err
    assert not list(tmp_path.rglob("*.png"))
    assert main([*argv, "--concepts", "real", "--clip", "toy"]) == 2
    assert "needs --prompts" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="needs --clip, --concepts, --prompts"):
        finexl.explain(lora="data/toy_loras/red", base=str(tiny_pipeline_dir))


def test_settings_are_checked_before_any_image(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        finexl.explain(lora="data/toy_loras/red", sampels=4)
    with pytest.raises(ConfigError, match="unknown method"):
        finexl.explain(lora="data/toy_loras/red", method="magic", cache_dir=str(tmp_path))
    with pytest.raises(FinexlError, match="device 'cuda:7'|unknown device"):
        finexl.explain(lora="data/toy_loras/red", device="cuda:7", cache_dir=str(tmp_path))
    assert not list(tmp_path.rglob("*.png"))


def test_only_user_errors_become_one_line(monkeypatch, capsys):
    import finexl.cli.env as env

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(env, "cmd_env", broken)
    with pytest.raises(KeyError):  # a bug keeps its traceback
        main(["env"])

    def user_error(args):
        raise ConfigError("bad value")

    monkeypatch.setattr(env, "cmd_env", user_error)
    assert main(["env"]) == 2 and capsys.readouterr().err.strip() == "finexl: error: bad value"
    assert main(["env", "-v"]) == 2 and "Traceback" in capsys.readouterr().err


def test_one_default_for_alpha_and_configs_check_their_fields():
    assert finexl.TrainConfig(rank=8).alpha == 8.0 and finexl.TrainConfig(rank=8, alpha=2).alpha == 2.0
    with pytest.raises(ConfigError, match="finite"):
        finexl.TrainConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match="guidance_scale"):
        finexl.SamplerConfig(guidance_scale=float("nan"))
    with pytest.raises(ConfigError, match="max_steps must be >= 1, got 0"):
        finexl.BuildConfig(max_steps=0)
    with pytest.raises(ConfigError, match="unknown method"):
        finexl.BenchConfig(methods=("finexl", "magic"))
