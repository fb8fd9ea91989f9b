"""--executor ray: the same results as the local executor, on a local Ray the test starts (2 CPUs) and tears down.
Skipped where Ray is not installed (the ``ray`` extra; CI installs it)."""

import json
import shutil

import pytest

from finexl.collection import explain_many
from finexl.explanation.pipeline import ExplainConfig
from finexl.sampling import SamplerConfig

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_equals_local(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir, local_ray):
    shutil.copytree(tiny_lora_dir, tmp_path / "lora")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "full", "path": "lora"}, {"id": "half", "path": "lora", "scale": 0.5}, {"id": "gone", "path": "x"},
    ]))  # fmt: skip
    results = {}
    # each with its own image cache (the Ray workers sample for themselves), at the same thread count (2: the tests
    # run torch on 2 threads): the images are quantized to bytes, so other thread counts can move a pixel by 1
    for executor in ("local", "ray"):
        cfg = ExplainConfig(
            preset="toy", base=str(tiny_pipeline_dir), clip=str(tiny_clip_dir), samples=6, n_bootstrap=20, n_null=20,
            sampler=SamplerConfig(num_inference_steps=2), cache_dir=str(tmp_path / f"cache-{executor}"),
            report_pairs=2,
        )  # fmt: skip
        run = explain_many(manifest, tmp_path / executor, cfg, executor=executor, num_cpus_per_task=2)
        assert sorted(run.explained) == ["full", "half"] and list(run.failed) == ["gone"]
        results[executor] = {
            m: json.loads((tmp_path / executor / "models" / m / "explanation.json").read_text()) for m in run.explained
        }
    assert ray.is_initialized()  # the executor used the runtime it found and left it running
    for m in ("full", "half"):
        local, remote = results["local"][m], results["ray"][m]
        assert [a["aspect"] for a in remote["aspects"]] == [a["aspect"] for a in local["aspects"]]
        assert [a["score"] for a in remote["aspects"]] == pytest.approx([a["score"] for a in local["aspects"]],
                                                                        abs=1e-5)  # fmt: skip
        assert [a["changed"] for a in remote["aspects"]] == [a["changed"] for a in local["aspects"]]
