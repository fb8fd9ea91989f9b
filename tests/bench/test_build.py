"""`finexl bench build` trains a suite's LoRAs with ground truth and resumes an interrupted build."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from finexl.bench.suites import (
    BuildConfig,
    SuiteModel,
    build_suite,
    single_aspect_suites,
    snapshot_steps,
    suite_models,
)
from finexl.errors import ConfigError


def test_suites_have_the_promised_shape():
    single = suite_models("single")
    assert len({m.spec.split("=")[0] for m in single}) >= 8
    assert {m.level for m in single} == {1, 2, 3, 4, 5}
    assert any(m.spec.endswith("less@1") for m in single) and any("more@" in m.spec for m in single)
    assert all(m.spec is None for m in suite_models("null"))
    assert len({m.data_seed for m in single}) == len(single)
    steps = suite_models("steps")  # the same shifts, levels by training steps of one run per shift
    assert {m.spec.split("@")[0] for m in steps} == {m.spec.split("@")[0] for m in single}
    assert {m.level for m in steps} == {1, 2, 3, 4, 5} and {m.spec.split("@")[1] for m in steps} == {"1"}
    # the suites a single-aspect measurement accepts: no null, mixture or subject among their models
    assert single_aspect_suites() == ["single", "steps", "scale"]


def test_build_is_resumable(tmp_path, tiny_pipeline_dir, monkeypatch):
    import finexl.bench.suites as suites

    calls = []
    real = suites.build_model

    def counting(model, *args, **kwargs):
        calls.append(model.id)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(suites, "build_model", counting)
    monkeypatch.setitem(suites.SUITES, "tiny", lambda: suites.single_aspect_models((("colour", "red"),), (1.0,))
                        + suites.null_models(1))  # fmt: skip
    cfg = BuildConfig(n_images=4, max_steps=1, image_size=32)
    (tmp_path / "tiny" / "models" / ".colour-red-L1.abc.tmp").mkdir(parents=True)  # an interrupted earlier build
    records = build_suite("tiny", tmp_path / "tiny", cfg, base=tiny_pipeline_dir, progress=False)
    assert [r["id"] for r in records] == ["colour-red-L1", "null-0"] and calls == ["colour-red-L1", "null-0"]
    assert not list((tmp_path / "tiny" / "models").glob(".*"))
    truth = json.loads((tmp_path / "tiny" / "models" / "colour-red-L1" / "truth.json").read_text())
    assert truth["spec"] == "colour=red@1" and truth["level"] == 1
    assert truth["torch_threads"] == torch.get_num_threads()  # what the weights' last bits depend on
    assert (tmp_path / "tiny" / "models" / "null-0" / "pytorch_lora_weights.safetensors").is_file()
    build_suite("tiny", tmp_path / "tiny", cfg, base=tiny_pipeline_dir, progress=False)
    assert calls == ["colour-red-L1", "null-0"]  # nothing retrained
    with pytest.raises(ConfigError, match="built with .*'max_steps': 1.*not .*'max_steps': 2"):  # never a mix
        build_suite("tiny", tmp_path / "tiny", BuildConfig(n_images=4, max_steps=2), base=tiny_pipeline_dir)
    assert calls == ["colour-red-L1", "null-0"]


def _lora_tensors(folder):
    return load_file(str(folder / "pytorch_lora_weights.safetensors"))


def test_step_levels_are_snapshots_of_one_run(tmp_path, tiny_pipeline_dir, monkeypatch):
    import finexl.bench.suites as suites

    family = suites.step_level_models((("colour", "red"),), (0.5, 1.0))
    assert [m.id for m in family] == ["colour-red-S1", "colour-red-S2"]
    assert {m.spec for m in family} == {"colour=red@1"} and len({m.data_seed for m in family}) == 1
    monkeypatch.setitem(suites.SUITES, "tiny-steps", lambda: family)
    cfg = BuildConfig(n_images=4, max_steps=4, image_size=32)
    out = tmp_path / "tiny-steps"
    records = build_suite("tiny-steps", out, cfg, base=tiny_pipeline_dir, progress=False)
    assert [(r["id"], r["level"], r["steps"]) for r in records] == [("colour-red-S1", 1, 2), ("colour-red-S2", 2, 4)]
    assert not list((out / "models").glob(".*"))  # the run's folder is gone, the snapshots are in the models
    early, last = _lora_tensors(out / "models" / "colour-red-S1"), _lora_tensors(out / "models" / "colour-red-S2")
    assert early.keys() == last.keys() and any(not torch.equal(early[k], last[k]) for k in early)
    # the run went at the family's own slow learning rate, not the trainer's default
    trained = json.loads((out / "models" / "colour-red-S1" / "finexl_train_config.json").read_text())
    assert (trained["lr"], trained["lr_scheduler"]) == (family[0].lr, family[0].lr_scheduler) == (5e-5, "constant")
    truth = json.loads((out / "models" / "colour-red-S1" / "truth.json").read_text())
    assert truth["lr"] == 5e-5 and truth["torch_threads"] == torch.get_num_threads()

    # the last level is the whole run: the same weights as a model of its own with the same spec, data, steps and
    # learning rate
    whole = SuiteModel("whole", "single", "colour=red@1", 1, family[0].data_seed, lr=5e-5, lr_scheduler="constant")
    suites.build_model(whole, tmp_path / "whole", cfg, tiny_pipeline_dir)
    alone = _lora_tensors(tmp_path / "whole")
    assert all(torch.equal(alone[k], last[k]) for k in last)

    # an interrupted family: a missing level is rebuilt from the same run (same schedule), the finished one kept
    shutil.rmtree(out / "models" / "colour-red-S1")
    stamp = (out / "models" / "colour-red-S2" / "truth.json").stat().st_mtime_ns
    build_suite("tiny-steps", out, cfg, base=tiny_pipeline_dir, progress=False)
    again = _lora_tensors(out / "models" / "colour-red-S1")
    assert all(torch.equal(again[k], early[k]) for k in early)
    assert (out / "models" / "colour-red-S2" / "truth.json").stat().st_mtime_ns == stamp


def test_a_snapshot_outside_the_run_is_refused():
    with pytest.raises(ValueError, match="snapshot lies in"):
        snapshot_steps(SuiteModel("x", "single", "colour=red@1", 1, 0, snapshot=1.5), BuildConfig())


def test_a_family_of_two_runs_is_refused(tmp_path):
    from finexl.bench.suites import build_family

    slow = SuiteModel("a", "single", "colour=red@1", 1, 7, snapshot=0.5, lr=5e-5)
    fast = SuiteModel("b", "single", "colour=red@1", 2, 7, snapshot=1.0)  # same data, the trainer's learning rate
    with pytest.raises(ValueError, match="one run"):
        build_family([slow, fast], [tmp_path / "a", tmp_path / "b"], BuildConfig(), base=tmp_path / "unused")
    assert not list(tmp_path.iterdir())


def test_too_few_steps_for_distinct_step_levels_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_steps=3 is too few for suite 'steps'"):
        build_suite("steps", tmp_path / "steps", BuildConfig(max_steps=3), base=tmp_path / "unused", progress=False)
    assert not (tmp_path / "steps").exists()  # refused before anything was written


def test_scale_levels_are_one_lora_at_several_scales(tmp_path, tiny_pipeline_dir, monkeypatch):
    import finexl.bench.suites as suites

    family = suites.scale_level_models((("colour", "red"),), (0.5, 1.0))
    assert [(m.id, m.lora_scale) for m in family] == [("colour-red-W1", 0.5), ("colour-red-W2", 1.0)]
    # the step levels' data, at the trainer's own learning rate (the step levels' run is slower)
    assert family[0].data_seed == suites.step_level_models((("colour", "red"),))[0].data_seed
    assert family[0].lr is None and suites.step_level_models((("colour", "red"),))[0].lr is not None
    monkeypatch.setitem(suites.SUITES, "tiny-scale", lambda: family)
    out = tmp_path / "tiny-scale"
    records = build_suite("tiny-scale", out, BuildConfig(n_images=4, max_steps=2, image_size=32),
                          base=tiny_pipeline_dir, progress=False)  # fmt: skip
    assert [(r["level"], r["lora_scale"], r["steps"]) for r in records] == [(1, 0.5, 2), (2, 1.0, 2)]
    low, full = _lora_tensors(out / "models" / "colour-red-W1"), _lora_tensors(out / "models" / "colour-red-W2")
    assert all(torch.equal(low[k], full[k]) for k in full)  # one LoRA; the scale is applied when it is sampled
