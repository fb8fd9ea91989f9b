"""finexl explain end to end on tiny real models: schema, caching, determinism, no-change, bad input."""

import json

import numpy as np
import pytest

from finexl.cli import main
from finexl.errors import ConfigError, InputError
from finexl.explanation.pipeline import ExplainConfig, PromptsError, read_prompts
from finexl.explanation.pipeline import explain as explain_
from finexl.explanation.result import SCHEMA
from finexl.loading import LoraError
from finexl.sampling import BadImagesError, SamplerConfig


def config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=None, model=None, lora_scale=1.0, **kw):
    """The tiny base and CLIP; the toy preset's concept bank and prompts."""
    base = dict(
        preset="toy", base=str(tiny_pipeline_dir), clip=str(tiny_clip_dir), samples=6, n_bootstrap=20, n_null=20,
        sampler=SamplerConfig(num_inference_steps=2), cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    return (lora, model, lora_scale), ExplainConfig(**{**base, **kw})


def explain(run):
    (lora, model, scale), cfg = run
    return explain_(lora=lora, model=model, scale=scale, config=cfg).to_dict()


def test_explanation_schema_cache_and_determinism(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir))
    first = explain(cfg)
    assert first["schema"] == SCHEMA and first["divergence"]["n_pairs"] == 6
    names = [a["aspect"] for a in first["aspects"]]
    assert sorted(names) == sorted(first["concept_bank"]["aspects"])
    order = [(not a["changed"], -a["score"]) for a in first["aspects"]]
    assert order == sorted(order) and all(0 <= a["score"] <= 1 for a in first["aspects"])
    for a in first["aspects"]:
        assert a["interval"][0] <= a["interval"][1] and a["threshold"] is not None
    assert first["models"]["base"]["fingerprint"] != first["models"]["personalized"]["fingerprint"]
    n_images = len(list((tmp_path / "cache").rglob("*.png")))
    assert n_images == 18  # personalized, base, base with null seeds
    second = explain(cfg)  # everything from the cache
    assert len(list((tmp_path / "cache").rglob("*.png"))) == n_images
    assert second["aspects"] == first["aspects"] and second["residual"] == first["residual"]
    json.dumps(second)  # serializable as it is


def test_a_lora_at_scale_zero_changes_nothing(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    res = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), lora_scale=0.0))
    assert res["divergence"]["norm"] < 1e-6
    assert not any(a["changed"] for a in res["aspects"])
    assert all(a["score"] < 1e-6 for a in res["aspects"])


def test_a_lora_trained_on_another_base_is_refused_unless_allowed(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                                   tiny_lora_dir, caplog):  # fmt: skip
    import shutil

    lora = tmp_path / "lora"
    shutil.copytree(tiny_lora_dir, lora)
    cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(lora), lora_scale=0.0)
    with caplog.at_level("WARNING", logger="finexl"):
        explain(cfg)
    assert "another base" not in caplog.text  # trained on this very base
    record = json.loads((lora / "finexl_train_config.json").read_text())
    record["identity"]["base"] = "0123456789abcdef"
    (lora / "finexl_train_config.json").write_text(json.dumps(record))
    n_images = len(list((tmp_path / "cache").rglob("*.png")))
    with pytest.raises(InputError, match=r"another base \(fingerprint 0123456789abcdef\).*--allow-other-base"):
        explain(cfg)
    assert len(list((tmp_path / "cache").rglob("*.png"))) == n_images  # refused before any image
    allowed = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(lora), lora_scale=0.0,
                     allow_other_base=True)  # fmt: skip
    with caplog.at_level("WARNING", logger="finexl"):
        expl = explain(allowed)
    assert "trained by finexl on another base (fingerprint 0123456789abcdef)" in caplog.text
    assert expl["models"]["personalized"]["trained_on"] == "0123456789abcdef"


def test_lora_for_another_base_is_refused_before_sampling(tmp_path, tiny_pipeline_dir, tiny_clip_dir):
    from finexl.utils import data_dir

    other = data_dir() / "toy_sd"  # the shipped toy pipeline has other shapes than the tiny one
    lora = tmp_path / "lora.safetensors"
    from finexl.loading import load_pipeline
    from finexl.toyworld.dataset import render_set
    from finexl.train.data import ImageSet
    from finexl.train.trainer import TrainConfig, train

    data = render_set(4, seed=0)
    train(load_pipeline(other), ImageSet(data.images, list(data.captions), list("abcd")),
          TrainConfig(max_steps=1, batch_size=2), tmp_path / "other", progress=False)  # fmt: skip
    (tmp_path / "other" / "pytorch_lora_weights.safetensors").rename(lora)
    with pytest.raises(LoraError, match="does not fit the base model"):
        explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(lora)))
    assert not list((tmp_path / "cache").rglob("*.png"))


def test_bad_prompts_files_are_named(tmp_path):
    (tmp_path / "empty.txt").write_text("\n# only a comment\n\n")
    with pytest.raises(PromptsError, match="no prompts"):
        read_prompts(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("un caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptsError, match="not UTF-8"):
        read_prompts(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_text("a cat\n\n# skipped\n a dog \n")
    assert read_prompts(tmp_path / "ok.txt") == ["a cat", "a dog"]


def test_direction_prompts_build_the_concept_directions(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    (tmp_path / "sampled.txt").write_text("a sks shape\n")
    (tmp_path / "same.txt").write_text("a sks shape\n")
    (tmp_path / "class.txt").write_text("a shape\n")
    (tmp_path / "empty.txt").write_text("\n")

    def run(directions=None):
        cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir),
                     prompts=str(tmp_path / "sampled.txt"), direction_prompts=directions)  # fmt: skip
        return explain(cfg)

    default = run()
    same = run(str(tmp_path / "same.txt"))
    assert same["concepts"] == default["concepts"] and same["aspects"] == default["aspects"]
    by_class = run(str(tmp_path / "class.txt"))
    assert by_class["settings"]["direction_prompts"].endswith("class.txt")
    assert by_class["divergence"] == default["divergence"]  # the same images...
    assert [c["score"] for c in by_class["concepts"]] != [c["score"] for c in default["concepts"]]  # ...other axes
    with pytest.raises(PromptsError, match="no prompts"):
        run(str(tmp_path / "empty.txt"))


def test_nan_images_are_named(tmp_path, tiny_pipeline_dir, tiny_clip_dir):
    import torch

    from finexl.loading import load_pipeline

    pipe = load_pipeline(tiny_pipeline_dir)
    with torch.no_grad():
        pipe.unet.conv_out.weight.fill_(float("nan"))
    pipe.save_pretrained(tmp_path / "broken")
    cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, model=str(tmp_path / "broken"))
    with pytest.raises(BadImagesError, match="NaN"):
        explain(cfg)


def test_blank_images_are_named_and_nothing_is_written(tmp_path, tiny_pipeline_dir, tiny_clip_dir, capsys):
    import torch

    from finexl.loading import load_pipeline

    pipe = load_pipeline(tiny_pipeline_dir)
    with torch.no_grad():  # the decoder's last layer outputs 0 everywhere: every image one flat grey
        pipe.vae.decoder.conv_out.weight.zero_()
        pipe.vae.decoder.conv_out.bias.zero_()
    pipe.save_pretrained(tmp_path / "grey")
    cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, model=str(tmp_path / "grey"))
    with pytest.raises(BadImagesError, match="blank"):
        explain(cfg)
    argv = ["explain", "--model", str(tmp_path / "grey"), "--base", str(tiny_pipeline_dir), "--preset", "toy",
            "--clip", str(tiny_clip_dir), "--samples", "4", "--steps", "2", "--bootstrap", "20",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    assert main(argv) == 2
    assert "blank" in capsys.readouterr().err
    assert not (tmp_path / "out" / "explanation.json").exists()


def test_cli_explain_writes_json_and_keeps_existing_results(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                            tiny_lora_dir, capsys):  # fmt: skip
    (tmp_path / "prompts.txt").write_text("a shape\na picture of a thing\n")
    argv = ["explain", "--lora", str(tiny_lora_dir), "--base", str(tiny_pipeline_dir), "--clip", str(tiny_clip_dir),
            "--concepts", "toy", "--prompts", str(tmp_path / "prompts.txt"), "--samples", "4", "--steps", "2",
            "--bootstrap", "20", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "aspect" in printed and "unexplained part" in printed
    expl = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert expl["settings"]["samples"] == 4 and expl["settings"]["prompts"].endswith("prompts.txt")
    before = (tmp_path / "out" / "explanation.json").read_bytes()
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "explanation.json").read_bytes() == before
    assert main([*argv[:-3], "--overwrite", "--concepts", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert main(["explain", "--lora", str(tiny_lora_dir), "--clip", "open_clip:x"]) == 2
    assert "open_clip:MODEL:CHECKPOINT" in capsys.readouterr().err


def test_config_rejects_nonsense():
    from finexl.explanation.pipeline import Personalization

    with pytest.raises(ConfigError, match="exactly one"):
        Personalization()
    with pytest.raises(ConfigError, match="samples"):
        ExplainConfig(samples=1)
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        ExplainConfig(method="nope")
    with pytest.raises(ConfigError, match="empty"):
        ExplainConfig(prompts=["a cat", "  "])
    assert np.isfinite(ExplainConfig().confidence)


def test_prompts_that_would_give_zero_directions_are_refused(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                             tiny_lora_dir):  # fmt: skip
    long = "a shape " * 30  # more tokens than the tiny CLIP's window of 40
    for prompts, message in (([long], "shorten it"), (["a shape\x00"], "control character")):
        with pytest.raises(PromptsError, match=message):
            explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), prompts=prompts))
    assert not list((tmp_path / "cache").rglob("*.png"))
    (tmp_path / "nul.txt").write_bytes(b"a shape\x00 on a table\n")
    with pytest.raises(PromptsError, match="control character"):
        read_prompts(tmp_path / "nul.txt")


def test_a_weight_sweep_is_each_scale_explained_on_the_same_base_images(
    tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir
):
    from finexl.explanation.result import Explanation

    run = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), scales=[1.0, 0.5, 0.25])
    swept = explain(run)
    sweep = swept["sweep"]
    assert sweep["scales"] == [0.25, 0.5, 1.0] and sweep["pairs"] == [6, 6, 6]
    assert swept["models"]["personalized"]["scale"] == 1.0  # the explanation is the largest scale's
    # base and null images are made once: 6 per scale, 6 base, 6 null
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 6 * 3 + 12
    # every column is the explanation at that scale alone, on the same pairs
    for k, scale in enumerate(sweep["scales"]):
        alone = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), lora_scale=scale))
        for a in alone["aspects"]:
            row = sweep["aspects"][a["aspect"]]
            assert row["score"][k] == pytest.approx(a["score"], abs=1e-6)
            assert row["interval"][k] == pytest.approx(a["interval"], abs=1e-6)
            assert row["changed"][k] == a["changed"]
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 6 * 3 + 12  # nothing sampled again
    for name, row in sweep["aspects"].items():
        onset = next((s for s, c in zip(sweep["scales"], row["changed"], strict=True) if c), None)
        assert row["onset"] == onset, name
    # the settings say how to make it again: the sweep comes back from the file's own config
    e = Explanation.from_dict(swept)
    assert ExplainConfig.from_explanation(e).scales == [0.25, 0.5, 1.0]


def test_bad_weight_sweeps_are_refused_before_any_image(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir,
                                                        capsys):  # fmt: skip
    for scales in ([0.0, 1.0], [-0.5, 1.0], [float("nan"), 1.0], [1.0], [0.5, 0.5]):
        with pytest.raises(ConfigError, match="weight sweep"):
            config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, scales=scales)
    for text in ("0,1", "-1,1", "nan,1", "0.5,abc"):
        assert main(["explain", "--lora", str(tiny_lora_dir), "--scales", text, "--cache", str(tmp_path)]) == 2
        assert "scales" in capsys.readouterr().err
    assert not (tmp_path / "images").exists()


def test_a_stack_is_its_loras_fused_together_and_compared_with_each_alone(
    tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir
):
    import shutil

    twin = shutil.copytree(tiny_lora_dir, tmp_path / "twin")
    # LoRA updates add: the LoRA at 0.5 stacked with its copy at 0.5 is the LoRA at 1 (the same images, up to
    # rounding), so the stack's explanation is the LoRA's at scale 1
    stack = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=[str(tiny_lora_dir), str(twin)],
                   lora_scale=0.5, interaction=True)  # fmt: skip
    stacked = explain(stack)
    single = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir)))
    by_name = {a["aspect"]: a for a in single["aspects"]}
    for a in stacked["aspects"]:
        assert a["score"] == pytest.approx(by_name[a["aspect"]]["score"], abs=0.02)
    assert [x["scale"] for x in stacked["models"]["personalized"]["stack"]] == [0.5, 0.5]
    record = stacked["stack"]
    assert record["pairs"] == 6 and [x["scale"] for x in record["loras"]] == [0.5, 0.5]
    for name, r in record["aspects"].items():
        assert r["sum"] == pytest.approx(sum(r["alone"]), abs=1e-5)
        assert r["interaction"] == pytest.approx(r["stack"] - r["sum"], abs=1e-5)
        assert r["interval"][0] <= r["interaction"] <= r["interval"][1]
        assert r["alone"][0] == pytest.approx(r["alone"][1], abs=1e-5)  # the twin alone moves as the LoRA alone
        changed = r["changed"]["stack"] or any(r["changed"]["alone"])
        expected = ("none" if not changed else ("new" if not any(r["changed"]["alone"]) else "strengthened")
                    if r["interval"][0] > 0 else "weakened" if r["interval"][1] < 0 else "additive")  # fmt: skip
        assert r["verdict"] == expected, name
    # the explanation's own settings and target make it again
    from finexl.explanation.result import Explanation

    e = Explanation.from_dict(stacked)
    assert e.target == {"lora": [str(tiny_lora_dir), str(twin)], "model": None, "scale": [0.5, 0.5]}


def test_bad_stacks_are_refused_before_any_image(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir, capsys):
    import torch
    from safetensors.torch import save_file

    twice = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=[str(tiny_lora_dir)] * 2)
    with pytest.raises(ConfigError, match="names one LoRA twice"):
        explain(twice)
    with pytest.raises(ConfigError, match="interaction compares a stack"):
        explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), interaction=True))
    with pytest.raises(ConfigError, match="takes one scale or one per LoRA"):
        explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=[str(tiny_lora_dir)] * 2,
                       lora_scale=[1.0, 1.0, 1.0]))  # fmt: skip
    # an SD 1.x LoRA and an SDXL one (cross-attention widths 768 and 2048)
    for name, width in (("sd1", 768), ("sdxl", 2048)):
        module = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
        save_file({f"{module}.lora_down.weight": torch.zeros(4, width), f"{module}.lora_up.weight": torch.zeros(8, 4)},
                  tmp_path / f"{name}.safetensors")  # fmt: skip
    args = ["explain", "--lora", str(tmp_path / "sd1.safetensors"), "--lora", str(tmp_path / "sdxl.safetensors")]
    assert main([*args, "--cache", str(tmp_path / "cache")]) == 2
    assert "the stack's LoRAs are for different bases: sd1.safetensors fits SD 1.x, sdxl.safetensors fits SDXL" in (
        capsys.readouterr().err
    )
    assert main([*args, "--scale", "1", "--scale", "1", "--scale", "1"]) == 2
    assert "take one --scale for all or one each" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_a_trigger_is_explained_with_and_without_from_the_same_base_images(
    tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir, capsys
):
    run = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), trigger="zq")
    with_trigger = explain(run)
    record = with_trigger["trigger"]
    assert record["word"] == "zq" and record["source"] == "given" and record["pairs"] == 6
    assert record["example"]["with"] == "zq, " + record["example"]["without"]
    # 6 personalized images with the trigger, 6 without, 6 base and 6 null: the base's made once
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 24
    # the leak is the plain explanation (the prompts without the trigger), number for number
    plain = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir)))
    for a in plain["aspects"]:
        row = record["leak"][a["aspect"]]
        assert row["score"] == pytest.approx(a["score"], abs=1e-6) and row["changed"] == a["changed"]
    assert record["leaked"] == [a["aspect"] for a in plain["aspects"] if a["changed"]]
    # with the trigger the personalized images differ: the scores are not the leak's
    assert any(abs(a["score"] - record["leak"][a["aspect"]]["score"]) > 1e-4 for a in with_trigger["aspects"])
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 24

    for word, message in (("日本", "cannot read the trigger word"), ("auto", "names no trigger phrase")):
        with pytest.raises(ConfigError, match=message):
            explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), trigger=word))
    with pytest.raises(ConfigError, match="a trigger word is explained on one LoRA"):
        explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=[str(tiny_lora_dir), str(tiny_lora_dir)],
                       trigger="zq"))  # fmt: skip
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 24  # refused before any image


def _dreambooth_copy(tmp_path, tiny_lora_dir, class_prompt="a shape"):
    """The tiny LoRA with a finexl DreamBooth training record ("a sks shape")."""
    import shutil

    from finexl.records import TRAIN_RECORD

    lora = shutil.copytree(tiny_lora_dir, tmp_path / "db", dirs_exist_ok=True)
    record = json.loads((lora / TRAIN_RECORD).read_text())
    record.update(instance_prompt="a sks shape", class_prompt=class_prompt)
    (lora / TRAIN_RECORD).write_text(json.dumps(record))
    return lora


def test_trigger_auto_reads_a_finexl_dreambooth_record(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    from finexl.explanation.pipeline import ExplainPipeline, Personalization

    lora = _dreambooth_copy(tmp_path, tiny_lora_dir)
    _, cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, trigger="auto")
    found = ExplainPipeline(cfg).resolve_trigger(str(lora / "pytorch_lora_weights.safetensors"))
    assert found == {"word": "sks", "source": "the DreamBooth instance prompt",
                     "instance": ("a shape", "a sks shape")}  # fmt: skip
    lora = _dreambooth_copy(tmp_path, tiny_lora_dir, class_prompt=None)  # without prior preservation
    assert ExplainPipeline(cfg).resolve_trigger(str(lora))["instance"] == ("a shape", "a sks shape")
    target = Personalization(lora=str(lora), trigger="sks", instance=("a shape", "a sks shape"))
    assert target.tuned_prompt("a shape") == "a sks shape" and target.tuned_prompt("a circle") == "sks, a circle"
    # another word than the identifier: no instance prompt, the word in front of every prompt
    _, cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, trigger="zq")
    assert ExplainPipeline(cfg).resolve_trigger(str(lora))["instance"] is None


def test_a_dreambooth_model_is_explained_on_its_instance_prompt_and_leaks_on_its_class_prompt_by_default(
    tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir
):
    from finexl.explanation.pipeline import ExplainConfig
    from finexl.explanation.result import Explanation

    lora = str(_dreambooth_copy(tmp_path, tiny_lora_dir))
    (_, _, _), cfg = config(tmp_path, tiny_pipeline_dir, tiny_clip_dir)
    made = explain_(lora=lora, config=cfg)
    assert made.samples.prompts == ["a shape"] * len(made.samples.prompts)  # the base's images shown
    default = made.to_dict()
    record = default["trigger"]
    assert record["word"] == "sks"
    assert record["source"] == "the DreamBooth instance prompt, by default for a DreamBooth model"
    assert record["example"] == {"base": "a shape", "with": "a sks shape", "without": "a shape"}
    assert default["settings"]["prompts"] == ["a shape"] and default["settings"]["trigger"] is None
    # 6 personalized images on "a sks shape", 6 on "a shape" (the leak), 6 base and 6 null on "a shape"
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 24
    # the same numbers as the explicit run: the class prompt as the prompts, the identifier as the trigger
    explicit = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=lora, prompts=["a shape"],
                              trigger="sks"))  # fmt: skip
    assert explicit["aspects"] == default["aspects"] and explicit["trigger"]["leak"] == record["leak"]
    # the leak is the plain explanation on the class prompt, number for number
    plain = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=lora, prompts=["a shape"],
                           trigger="none"))  # fmt: skip
    assert plain.get("trigger") is None
    for a in plain["aspects"]:
        assert record["leak"][a["aspect"]]["score"] == pytest.approx(a["score"], abs=1e-6)
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 24  # nothing sampled again
    # the explanation's settings make it again
    again = explain_(lora=lora, config=ExplainConfig.from_explanation(Explanation.from_dict(default))).to_dict()
    assert again["aspects"] == default["aspects"]
    # prompts of the user's are kept: the trigger goes in front of them
    own = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=lora, prompts=["a circle"]))
    assert own["trigger"]["example"] == {"base": "a circle", "with": "sks, a circle", "without": "a circle"}
    # a LoRA that is not a DreamBooth model: no trigger by default
    assert explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir))).get("trigger") is None
    # a sweep of a DreamBooth model: every scale on its instance prompt, the leak at the largest; the scale 1 column
    # is the explanation above, number for number
    swept = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=lora, scales=[0.5, 1.0]))
    assert swept["trigger"]["leak"] == record["leak"] and swept["settings"]["prompts"] == ["a shape"]
    for a in default["aspects"]:
        assert swept["sweep"]["aspects"][a["aspect"]]["score"][-1] == pytest.approx(a["score"], abs=1e-6)


def test_training_tags_join_the_concept_bank_as_their_own_aspect(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                                 tiny_lora_dir):  # fmt: skip
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    lora = shutil.copytree(tiny_lora_dir, tmp_path / "tagged")
    file = lora / "pytorch_lora_weights.safetensors"
    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
    tags = {"img": {"solo": 9, "zebra hide": 7, "a circle": 5, "scarlet": 2}}
    save_file(load_file(str(file)), str(file), metadata=metadata | {"ss_tag_frequency": json.dumps(tags)})
    res = explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(lora), concepts_from_tags=2))
    assert "tags" in res["concept_bank"]["aspects"]
    tag_aspect = next(a for a in res["aspects"] if a["aspect"] == "tags")
    assert tag_aspect["group"] == "tags" and tag_aspect["concept"] in ("zebra hide", "a circle")  # "solo" is common
    assert {c["phrase"] for c in res["concepts"] if c["aspect"] == "tags"} == {"zebra hide", "a circle"}
    with pytest.raises(ConfigError, match="holds no training tags"):
        explain(config(tmp_path, tiny_pipeline_dir, tiny_clip_dir, lora=str(tiny_lora_dir), concepts_from_tags=2))
