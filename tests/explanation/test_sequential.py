"""``samples='auto'``: the stochastic-curtailment rule's values, its error rate on simulated paths, and the pipeline
drawing rounds of the fixed rule's pairs."""

import numpy as np
import pytest
from scipy.stats import norm

from finexl.errors import ConfigError
from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline, Personalization, requests
from finexl.explanation.pipeline import explain as explain_
from finexl.explanation.sequential import Evidence, rounds, unsettled
from finexl.sampling import SamplerConfig

Z_CRIT = float(norm.ppf(0.95))


def evidence(z, boot=None):
    z = np.asarray(z, float)
    boot = np.zeros((50, len(z))) if boot is None else boot
    return Evidence(z, Z_CRIT, boot)


def test_rounds_end_at_the_cap():
    assert rounds(32, 32, 128) == [32, 64, 96, 128]
    assert rounds(48, 32, 100) == [48, 80, 100]
    assert rounds(200, 32, 128) == [128]


def test_the_rule_settles_clear_verdicts_and_waits_on_close_ones():
    names = ["clear", "close", "none", "rising"]
    scores = np.array([0.6, 0.2, 0.01, 0.1])
    rng = np.random.default_rng(0)
    boot = scores + 0.02 * rng.standard_normal((200, 4))
    # at a quarter of the cap: z=20 is far past the boundary (z_crit + 2.33 sqrt(.75)) / sqrt(.25) = 7.3; z=3 is
    # CHANGED now but not settled; z=-3 is settled unchanged (predictive chance of CHANGED: 4e-6); z=1.5 is unchanged
    # but could still become CHANGED (0.78)
    left = unsettled(evidence([20, 3, -3, 1.5], boot), names, scores, 32, 128, 0.01)
    assert left == ["close", "rising"]
    # the boundary for a CHANGED aspect, exactly: P(final CHANGED | no drift) = 1 - error
    t = 0.5
    boundary = (Z_CRIT + norm.ppf(0.99) * np.sqrt(1 - t)) / np.sqrt(t)
    assert unsettled(evidence([boundary + 1e-6]), ["a"], np.array([0.5]), 64, 128, 0.01) == []
    assert unsettled(evidence([boundary - 1e-3]), ["a"], np.array([0.5]), 64, 128, 0.01) == ["a"]
    # and for an unchanged one: predictive P(final CHANGED) = error
    futile = Z_CRIT * np.sqrt(t) + norm.ppf(0.01) * np.sqrt(1 - t)
    assert unsettled(evidence([futile - 1e-6]), ["a"], np.array([0.1]), 64, 128, 0.01) == []
    assert unsettled(evidence([futile + 1e-3]), ["a"], np.array([0.1]), 64, 128, 0.01) == ["a"]
    # the cap settles everything; without a null test nothing settles before it
    assert unsettled(evidence([3, 1.5]), names[:2], scores[:2], 128, 128, 0.01) == []
    assert unsettled(evidence([np.nan, np.nan]), names[:2], scores[:2], 32, 128, 0.01) == names[:2]


def test_share_settles_unchanged_verdicts_together_but_never_one_more_likely_to_flip():
    t = 0.25  # 32 of 128 pairs

    def z_for(chance):  # the margin whose predictive chance of a CHANGED verdict at the cap is `chance`
        return Z_CRIT * np.sqrt(t) + norm.ppf(chance) * np.sqrt(1 - t)

    names = [f"a{i}" for i in range(10)]
    scores = np.full(10, 0.1)
    # one aspect at a 0.3 chance of flipping, nine settled far below: mean chance ~0.03 <= 0.05
    z = [z_for(0.3)] + [z_for(1e-6)] * 9
    assert unsettled(evidence(z), names, scores, 32, 128, 0.05, "each") == ["a0"]
    assert unsettled(evidence(z), names, scores, 32, 128, 0.05, "share") == []
    # a 0.6 chance is more likely than not to end CHANGED: it holds though the mean chance is 0.03 <= 0.05
    z = [z_for(0.6)] + [z_for(1e-9)] * 19
    names20, scores20 = [f"a{i}" for i in range(20)], np.full(20, 0.1)
    assert unsettled(evidence(z), names20, scores20, 32, 128, 0.05, "share") == ["a0"]
    # two aspects at 0.3: mean 0.06 > 0.05, both hold
    z = [z_for(0.3), z_for(0.3)] + [z_for(1e-6)] * 8
    assert unsettled(evidence(z), names, scores, 32, 128, 0.05, "share") == ["a0", "a1"]
    with pytest.raises(ValueError, match="verdicts"):
        unsettled(evidence(z), names, scores, 32, 128, 0.05, "some")


def test_the_order_of_changed_aspects_must_be_settled_too():
    scores = np.array([0.5, 0.49])
    rng = np.random.default_rng(1)
    tied = scores + 0.05 * rng.standard_normal((200, 2))
    assert unsettled(evidence([30, 30], tied), ["a", "b"], scores, 32, 128, 0.01) == ["a>b"]
    apart = np.array([0.8, 0.3]) + 0.01 * rng.standard_normal((200, 2))
    assert unsettled(evidence([30, 30], apart), ["a", "b"], np.array([0.8, 0.3]), 32, 128, 0.01) == []


def _curtailed(paths: np.ndarray, looks: list[int], cap: int, error: float) -> np.ndarray:
    """The verdict (CHANGED or not) of the rule on margin paths z_k = B(t_k) / sqrt(t_k)."""
    verdict = np.zeros(len(paths), bool)
    for p, b in enumerate(paths):
        for k, n in enumerate(looks):
            z = b[k] / np.sqrt(n / cap)
            if not unsettled(evidence([z]), ["a"], np.array([0.5]), n, cap, error):
                verdict[p] = z > Z_CRIT
                break
    return verdict


def test_stopping_early_keeps_the_false_positive_rate_of_the_fixed_rule():
    """Brownian margins at the edge of no change (the fixed rule says CHANGED 5 % of the time): the curtailed rule
    says CHANGED at most alpha / (1 - error) as often (Lan, Simon and Halperin); a loop that stops at the first
    look past z_crit does not. With a moderate change it agrees with the fixed rule's verdict 99 % of the time."""
    rng = np.random.default_rng(0)
    looks, cap, n_paths = [16, 32, 48, 64, 80, 96, 112, 128], 128, 20000
    increments = rng.standard_normal((n_paths, len(looks))) * np.sqrt(np.diff([0] + looks) / cap)
    paths = np.cumsum(increments, axis=1)
    fixed = paths[:, -1] > Z_CRIT
    curtailed = _curtailed(paths, looks, cap, 0.01)
    peeking = (paths / np.sqrt(np.array(looks) / cap) > Z_CRIT).any(axis=1)
    se = np.sqrt(0.05 * 0.95 / n_paths)
    assert abs(fixed.mean() - 0.05) < 4 * se
    assert curtailed.mean() <= fixed.mean() / 0.99 + 4 * se
    assert peeking.mean() > 2 * fixed.mean()  # what the rule avoids
    # and with a real change of moderate size it mostly agrees with the fixed rule's verdict
    drift = 3.0
    moved = paths + drift * np.array(looks) / cap
    agree = (_curtailed(moved, looks, cap, 0.01) == (moved[:, -1] > Z_CRIT)).mean()
    assert agree > 0.99


def config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, **kw):
    base = dict(
        preset="toy", base=str(tiny_pipeline_dir), clip=str(tiny_clip_dir), n_bootstrap=20, n_null=20,
        sampler=SamplerConfig(num_inference_steps=2), cache_dir=str(tmp_path / "cache"), report_pairs=0,
    )  # fmt: skip
    return ExplainConfig(**{**base, **kw})


def test_auto_draws_rounds_of_the_fixed_rules_pairs(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    auto = explain_(lora=str(tiny_lora_dir), config=config(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                           samples="auto", auto_round=4, auto_cap=8))  # fmt: skip
    seq = auto.sequential
    assert seq["rule"] == "stochastic curtailment" and seq["cap"] == 8 and seq["error"] == 0.05  # the default
    ns = [look["n"] for look in seq["looks"]]
    assert ns == [4, 8][: len(ns)] and auto.divergence["n_pairs"] == ns[-1]
    assert seq["stopped"] == ("cap" if ns[-1] == 8 else "settled")
    # a look that left something unsettled is followed by another, up to the cap
    assert all(look["unsettled"] for look in seq["looks"][:-1])
    assert "samples auto:" in auto.table()
    # the pairs it used are the fixed rule's first ones, read with the directions of all its prompts: the stages of
    # the fixed pipeline on that prefix give the same verdicts to the digit
    fixed = ExplainPipeline(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, samples=8))
    target = Personalization(lora=str(tiny_lora_dir))
    images = fixed.sample(target, n=ns[-1])
    embeddings = fixed.embed(images)
    assert np.array_equal(embeddings.tuned, auto.embeddings.tuned)
    assert np.array_equal(embeddings.null, auto.embeddings.null)
    result = fixed.decompose(embeddings, fixed.directions(requests(fixed.prompts, 8, 0)[0]))
    assert result.to_dict()["aspects"] == auto.to_dict()["aspects"]


def test_rounds_switch_the_fused_lora_on_and_off_without_reading_it_again(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                                         tiny_lora_dir, monkeypatch):  # fmt: skip
    """Round two of one pipeline (LoRA weights switched back in, then the base's restored) makes the images a fresh
    pipeline makes in one go; the LoRA file is read once."""
    import finexl.explanation.pipeline as pipeline_module

    reads = []
    load_lora = pipeline_module.load_lora
    monkeypatch.setattr(pipeline_module, "load_lora", lambda *a, **k: reads.append(a[1]) or load_lora(*a, **k))
    target = Personalization(lora=str(tiny_lora_dir))
    rounds = ExplainPipeline(config(tmp_path / "a", tiny_pipeline_dir, tiny_clip_dir, samples="auto", auto_round=4,
                                    auto_cap=8))  # fmt: skip
    rounds.sample(target, n=4)
    two = rounds.sample(target, n=8)
    assert len(reads) == 1
    one = ExplainPipeline(config(tmp_path / "b", tiny_pipeline_dir, tiny_clip_dir, samples=8)).sample(target, n=8)
    assert np.array_equal(two.tuned, one.tuned) and np.array_equal(two.base, one.base)
    assert np.array_equal(two.null, one.null)
    assert np.abs(two.tuned.astype(int) - two.base.astype(int)).max() > 5  # the LoRA did change the images


def test_auto_settles_early_when_every_verdict_is_clear(tmp_path, tiny_pipeline_dir, tiny_clip_dir):
    """The base against itself: no aspect moves, every verdict is settled 'unchanged' at the first look."""
    cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, samples="auto", auto_round=8, auto_cap=64)
    auto = explain_(model=str(tiny_pipeline_dir), config=cfg)
    assert auto.changed == []
    assert auto.sequential["looks"] == [{"n": 8, "unsettled": []}] and auto.sequential["stopped"] == "settled"
    assert auto.divergence["n_pairs"] == 8


def test_auto_settings_are_checked():
    with pytest.raises(ConfigError, match="null test"):
        ExplainConfig(samples="auto", null=False)
    with pytest.raises(ConfigError, match="'auto' or a number"):
        ExplainConfig(samples="some")
    with pytest.raises(ConfigError, match="auto_round"):
        ExplainConfig(samples="auto", auto_round=200, auto_cap=128)
    with pytest.raises(ConfigError, match="auto_verdicts"):
        ExplainConfig(auto_verdicts="all")


def test_cli_samples_auto_and_a_multistep_scheduler(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    import json

    from finexl.cli import main

    out = tmp_path / "out"
    code = main(["explain", "--base", str(tiny_pipeline_dir), "--preset", "toy", "--clip", str(tiny_clip_dir),
                 "--lora", str(tiny_lora_dir), "--samples", "auto", "--auto-round", "4", "--auto-cap", "8",
                 "--auto-error", "0.05", "--auto-verdicts", "share", "--scheduler", "unipc", "--steps", "3",
                 "--bootstrap", "20",
                 "--report-pairs", "0", "--cache", str(tmp_path / "cache"), "--out", str(out), "-q"])  # fmt: skip
    assert code == 0
    e = json.loads((out / "explanation.json").read_text())
    assert e["sequential"]["cap"] == 8 and e["sequential"]["error"] == 0.05 and e["sequential"]["round"] == 4
    assert e["sequential"]["verdicts"] == "share" and e["settings"]["auto_verdicts"] == "share"
    assert e["divergence"]["n_pairs"] == e["sequential"]["looks"][-1]["n"]
    assert e["settings"]["samples"] == "auto"
    assert e["settings"]["sampler"]["scheduler"] == "unipc" and e["settings"]["sampler"]["num_inference_steps"] == 3
    assert e["settings"]["sampler"]["scheduler_class"] == "UniPCMultistepScheduler"
    assert main(["explain", "--samples", "some", "--cache", str(tmp_path / "cache")]) == 2


def test_cli_compile_reaches_the_config():
    from finexl.cli import build_parser
    from finexl.cli.explain import config_from_args

    for command in (["explain", "--lora", "x"], ["explain-many", "manifest.json", "--out", "x"]):
        assert config_from_args(build_parser().parse_args([*command, "--compile"])).compile is True
        assert config_from_args(build_parser().parse_args(command)).compile is False
