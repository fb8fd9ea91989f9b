"""`finexl bench build` trains a suite's LoRAs with ground truth and resumes an interrupted build."""

import json

from finexl.bench.suites import BuildConfig, build_suite, suite_models


def test_suites_have_the_promised_shape():
    single = suite_models("single")
    assert len({m.spec.split("=")[0] for m in single}) >= 8
    assert {m.level for m in single} == {1, 2, 3, 4, 5}
    assert any(m.spec.endswith("less@1") for m in single) and any("more@" in m.spec for m in single)
    assert all(m.spec is None for m in suite_models("null"))
    assert len({m.data_seed for m in single}) == len(single)


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
    assert (tmp_path / "tiny" / "models" / "null-0" / "pytorch_lora_weights.safetensors").is_file()
    build_suite("tiny", tmp_path / "tiny", cfg, base=tiny_pipeline_dir, progress=False)
    assert calls == ["colour-red-L1", "null-0"]  # nothing retrained
