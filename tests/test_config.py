"""One definition per setting: the dataclass field gives the flag, its help and range, the default, and the round
trip; an explanation runs again from its own file."""

import argparse
import dataclasses
import json

import pytest

from finexl.bench.runner import BenchConfig
from finexl.bench.suites import BuildConfig
from finexl.cli import build_parser
from finexl.cli.explain import config_from_args
from finexl.config import Config, add_arguments, from_args
from finexl.errors import ConfigError
from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline
from finexl.explanation.result import Explanation
from finexl.sampling import SamplerConfig
from finexl.toyworld.clip import ToyClipConfig, ToyClipTrainConfig
from finexl.toyworld.diffusion import ToyDiffusionTrainConfig, ToyUnetConfig, ToyVaeTrainConfig
from finexl.toyworld.evaluate import EvalConfig
from finexl.toyworld.judge import JudgeConfig, JudgeTrainConfig
from finexl.train.trainer import TrainConfig

CONFIGS = [ExplainConfig, SamplerConfig, TrainConfig, BenchConfig, BuildConfig, EvalConfig, JudgeConfig,
           JudgeTrainConfig, ToyClipConfig, ToyClipTrainConfig, ToyVaeTrainConfig, ToyUnetConfig,
           ToyDiffusionTrainConfig]  # fmt: skip


def test_every_config_of_the_package_is_listed_here():
    assert {c.__name__ for c in Config.__subclasses__()} == {c.__name__ for c in CONFIGS}


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_carries_its_help_and_the_dict_round_trip_is_exact(cls, tmp_path):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert cls.from_json(cfg.to_json(tmp_path / "config.json")) == cfg
    with pytest.raises(ConfigError, match="unknown .* setting.*bogus"):
        cls.from_dict({**cfg.to_dict(), "bogus": 1})
    assert cls.from_dict({**cfg.to_dict(), "bogus": 1}, strict=False) == cfg


def test_ranges_are_checked_from_the_field_definition_in_python_and_on_the_command_line(capsys):
    with pytest.raises(ConfigError, match="n_bootstrap must be >= 10, got 5"):
        ExplainConfig(n_bootstrap=5)
    with pytest.raises(ConfigError, match="auto_error must be > 0 and < 0.5, got 0.5"):
        ExplainConfig(auto_error=0.5)
    with pytest.raises(ConfigError, match="finite"):
        TrainConfig(lr=float("nan"))
    parser = build_parser()
    for flag, value in (("--bootstrap", "5"), ("--confidence", "1"), ("--steps", "0"), ("--auto-error", "nan")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["explain", "--lora", "toy:red", flag, value])
        assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_the_command_line_defaults_are_the_dataclasses():
    parser = build_parser()
    args = parser.parse_args(["explain", "--lora", "toy:red"])
    assert config_from_args(args) == ExplainConfig()
    args = parser.parse_args(["explain", "--lora", "toy:red", "--bootstrap", "50", "--no-null", "--samples", "16",
                              "--steps", "3", "--cache", "c"])  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.n_bootstrap, cfg.null, cfg.samples, cfg.sampler.num_inference_steps, cfg.cache_dir) == (
        50, False, 16, 3, "c")  # fmt: skip
    assert cfg.sampler.scheduler == ExplainConfig().sampler.scheduler  # the rest of the nested config: its default
    args = parser.parse_args(
        [
            "train",
            "lora",
            "--data",
            "d",
            "--out",
            "o",
            "--snapshots",
            "5,10",
            "--target-modules",
            "to_q,to_v",
            "--validation-prompt",
            "a",
            "--validation-prompt",
            "b",
        ]
    )
    from finexl.cli.train import _settings

    settings = _settings(args)
    assert settings == {"snapshot_steps": (5, 10), "target_modules": ("to_q", "to_v"),
                        "validation_prompts": ["a", "b"], "max_steps": 10}  # fmt: skip
    assert TrainConfig(**settings).validation_prompts == ("a", "b")


def test_generated_flags_cover_every_setting_with_a_flag():
    parser = argparse.ArgumentParser()
    add_arguments(parser, ExplainConfig)
    dests = {a.dest for a in parser._actions}
    for f in dataclasses.fields(ExplainConfig):
        if f.name == "sampler":
            assert {"sampler.num_inference_steps", "sampler.guidance_scale", "sampler.scheduler"} <= dests
        elif f.metadata.get("cli", True):
            assert f.name in dests, f.name
    assert from_args(ExplainConfig, parser.parse_args([])) == ExplainConfig()


def test_a_nested_config_is_read_back_from_its_dict():
    cfg = ExplainConfig.from_dict({"sampler": {"num_inference_steps": 3, "scheduler": "default"}})
    assert isinstance(cfg.sampler, SamplerConfig) and cfg.sampler.num_inference_steps == 3
    with pytest.raises(ConfigError, match="unknown SamplerConfig setting.*steps"):
        ExplainConfig.from_dict({"sampler": {"steps": 3}})


def test_an_explanation_runs_again_from_its_own_file(red_folder, shared_cache):
    """``ExplainPipeline(ExplainConfig.from_json(path))(**explanation.target)`` gives the same table."""
    path = red_folder / "explanation.json"
    saved = Explanation.from_json(path)
    cfg = ExplainConfig.from_json(path)
    assert cfg.cache_dir == str(shared_cache) and cfg.samples == "auto" and cfg.preset == "toy"
    again = ExplainPipeline(cfg)(**saved.target)
    assert again.table() == saved.table()
    assert [a.interval for a in again.aspects] == [a.interval for a in saved.aspects]
    # a setting finexl does not know is refused, not dropped
    obj = json.loads(path.read_text())
    obj["settings"]["n_boostrap"] = 50
    (red_folder.parent / "typo.json").write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="n_boostrap"):
        ExplainConfig.from_json(red_folder.parent / "typo.json")
