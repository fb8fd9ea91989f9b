"""LoRA files in the kohya/A1111 format load onto a base with the right scale; a LoRA for another base is named."""

import os
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file

from finexl.errors import InputError
from finexl.loading import LoraError, fingerprint_folder, load_lora, load_pipeline

MODULE = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
TE_MODULE = "encoder.layers.0.self_attn.q_proj"  # kohya files name it text_model.encoder...


def kohya_name(prefix: str, module: str) -> str:
    return f"{prefix}_{module.replace('.', '_')}"


def kohya_file(path, pipe, rank=4, alpha=2.0, in_shrink=0, seed=0):
    """A kohya-format LoRA on one UNet and one text-encoder module, with known random matrices."""
    g = torch.Generator().manual_seed(seed)
    tensors, truth = {}, {}
    for prefix, model, module in (("lora_unet", pipe.unet, MODULE), ("lora_te", pipe.text_encoder, TE_MODULE)):
        layer = model.get_submodule(module)
        # kohya/A1111 files name text-encoder modules as transformers 4 did (text_model.encoder....)
        module_name = ("text_model." + module) if prefix == "lora_te" else module
        shrink = in_shrink if prefix == "lora_unet" else 0  # a UNet module made for another base
        down = torch.randn(rank, layer.in_features - shrink, generator=g) * 0.1
        up = torch.randn(layer.out_features, rank, generator=g) * 0.1
        name = kohya_name(prefix, module_name)
        tensors[f"{name}.lora_down.weight"] = down
        tensors[f"{name}.lora_up.weight"] = up
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
        truth[module] = (down, up)
    save_file(tensors, str(path))
    return truth


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_kohya_lora_applies_scale_times_alpha_over_rank(tiny_pipeline_dir, tmp_path, scale):
    pipe = load_pipeline(tiny_pipeline_dir)
    truth = kohya_file(tmp_path / "k.safetensors", pipe, rank=4, alpha=2.0)
    x_unet = torch.randn(3, pipe.unet.get_submodule(MODULE).in_features)
    x_te = torch.randn(3, pipe.text_encoder.get_submodule(TE_MODULE).in_features)
    with torch.no_grad():
        before = pipe.unet.get_submodule(MODULE)(x_unet), pipe.text_encoder.get_submodule(TE_MODULE)(x_te)
    load_lora(pipe, tmp_path / "k.safetensors", scale=scale)
    with torch.no_grad():
        after = pipe.unet.get_submodule(MODULE)(x_unet), pipe.text_encoder.get_submodule(TE_MODULE)(x_te)
    for (down, up), x, b, a in zip(truth.values(), (x_unet, x_te), before, after, strict=True):
        expected = b + scale * (2.0 / 4) * x @ down.T @ up.T
        torch.testing.assert_close(a, expected, rtol=1e-4, atol=1e-5)


def test_lora_for_another_base_names_the_module(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    kohya_file(tmp_path / "bad.safetensors", pipe, in_shrink=3)
    with pytest.raises(LoraError, match=f"LoRA module unet.{MODULE} does not fit the base model"):
        load_lora(pipe, tmp_path / "bad.safetensors")
    missing = "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {f"{missing}.lora_down.weight": torch.zeros(2, 8), f"{missing}.lora_up.weight": torch.zeros(8, 2)},
        str(tmp_path / "missing.safetensors"),
    )
    with pytest.raises(LoraError, match="down_blocks.7.attentions.0.transformer_blocks.0.attn1.to_q does not exist"):
        load_lora(pipe, tmp_path / "missing.safetensors")
    # The failed loads left the model without an adapter.
    assert not any("lora" in n for n, _ in pipe.unet.named_parameters())


def test_unreadable_lora_files_are_named(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    with pytest.raises(LoraError, match="does not exist"):
        load_lora(pipe, tmp_path / "nothing.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(LoraError, match="could not read the LoRA file"):
        load_lora(pipe, tmp_path / "corrupt.safetensors")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(LoraError, match="not a .safetensors file"):
        load_lora(pipe, tmp_path / "w.bin")


def test_fingerprint_follows_the_weights(tiny_pipeline_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, copy)
    assert fingerprint_folder(copy) == fingerprint_folder(tiny_pipeline_dir)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint_folder(copy) != fingerprint_folder(tiny_pipeline_dir)


CONV = "down_blocks.0.resnets.0.conv1"


@pytest.mark.parametrize(
    "module, down, up, message",
    [
        (MODULE, torch.zeros(4), torch.zeros(32, 4), "1-D"),  # a vector for a matrix
        (MODULE, torch.zeros(4, 32, dtype=torch.int32), torch.zeros(32, 4, dtype=torch.int32), "floating point"),
        (MODULE, torch.full((4, 32), float("nan")), torch.zeros(32, 4), "NaN or infinite"),
        (MODULE, torch.zeros(4, 32, 1, 1), torch.zeros(32, 4, 1, 1), "needs 2-D"),  # a conv LoRA on a linear layer
        (CONV, torch.zeros(4, 16, 5, 5), torch.zeros(16, 4, 1, 1), "kernels (5, 5)"),  # the conv is 3x3
    ],
)
def test_lora_tensors_are_checked_before_they_touch_the_model(tiny_pipeline_dir, tmp_path, module, down, up, message):
    pipe = load_pipeline(tiny_pipeline_dir)
    layer = pipe.unet.get_submodule(module)
    if module == MODULE:
        assert (layer.in_features, layer.out_features) == (32, 32)
    else:
        assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (16, 16, (3, 3))
    name = kohya_name("lora_unet", module)
    save_file({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}, str(tmp_path / "x.safetensors"))
    with pytest.raises(LoraError, match=re.escape(message)) as info:
        load_lora(pipe, tmp_path / "x.safetensors")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert not any("lora" in n for n, _ in pipe.unet.named_parameters())


def test_a_fused_lora_samples_like_the_unfused_one_and_unfusing_restores_the_base_exactly(tiny_pipeline_dir,
                                                                                          tiny_lora_dir):  # fmt: skip
    import numpy as np

    from finexl.loading import fuse_lora
    from finexl.sampling import SamplerConfig, sample_images

    pipe = load_pipeline(tiny_pipeline_dir)
    cfg = SamplerConfig(num_inference_steps=2)
    prompts, seeds = ["a shape", "a red thing", "a figure"], [0, 1, 2]
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    base = sample_images(pipe, prompts, seeds, cfg)
    name = load_lora(pipe, tiny_lora_dir, scale=0.7)
    unfused = sample_images(pipe, prompts, seeds, cfg)
    saved = fuse_lora(pipe, name)
    assert len(saved) > 0  # the LoRA's layers were merged
    assert pipe.unet.state_dict().keys() == weights.keys()  # and taken out again: the base's own modules
    fused = sample_images(pipe, prompts, seeds, cfg)
    assert np.abs(fused.astype(int) - unfused.astype(int)).max() <= 1  # the same model, up to rounding
    assert np.abs(unfused.astype(int) - base.astype(int)).max() > 5  # and not the base
    saved.restore(pipe)
    after = pipe.unet.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)
    assert (sample_images(pipe, prompts, seeds, cfg) == base).all()
    saved.apply(pipe)  # the personalized weights again, without the file
    assert (sample_images(pipe, prompts, seeds, cfg) == fused).all()
    saved.restore(pipe)
    once = fuse_lora(pipe, load_lora(pipe, tiny_lora_dir, scale=0.7), keep_tuned=False)
    assert once.tuned is None and (sample_images(pipe, prompts, seeds, cfg) == fused).all()
    with pytest.raises(RuntimeError, match="not kept"):
        once.apply(pipe)


def test_checkpoints_of_any_suffix_fingerprint_by_their_bytes(tmp_path):
    """open_clip's .pt checkpoints once all hashed to the empty digest, so one was served another's cached text
    directions."""
    import hashlib

    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights two")
    empty = hashlib.sha256().hexdigest()[:16]
    assert empty != fingerprint_folder(first) != fingerprint_folder(second) != empty
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(b"weights three")
    assert fingerprint_folder(folder) != empty


def test_a_hub_style_folder_loads_without_its_safety_checker(tiny_pipeline_dir, tmp_path):
    """A StableDiffusionPipeline folder as the hub ships it names a safety checker and its feature extractor;
    finexl samples without them (their folders are not even read: here they do not exist)."""
    import json
    import shutil

    folder = shutil.copytree(tiny_pipeline_dir, tmp_path / "hub_style")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["requires_safety_checker"] = True
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_pipeline(folder)
    assert pipe.safety_checker is None
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(InputError, match="model_index.json is not valid JSON"):
        load_pipeline(folder)


def test_large_weights_are_hashed_once_per_size_and_modification_time(tmp_path, monkeypatch):
    import os

    from finexl.loading import fingerprints

    monkeypatch.setenv("FINEXL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "base"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    (folder / "model_index.json").write_text("{}")
    uncached = fingerprint_folder(folder)  # below the size limit: hashed, nothing kept
    assert not (tmp_path / "cache" / fingerprints.FINGERPRINT_CACHE_FILE).exists()
    monkeypatch.setattr(fingerprints, "FINGERPRINT_CACHE_BYTES", 1024)
    assert fingerprint_folder(folder) == uncached  # the same digest, now kept
    assert (tmp_path / "cache" / fingerprints.FINGERPRINT_CACHE_FILE).is_file()
    # new bytes with the same size and modification time: the kept digest answers without reading the file
    stat = weights.stat()
    weights.write_bytes(b"b" * 4096)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint_folder(folder) == uncached
    # a new modification time: hashed again
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = fingerprint_folder(folder)
    assert changed != uncached
    monkeypatch.setattr(fingerprints, "FINGERPRINT_CACHE_BYTES", 1 << 40)
    assert fingerprint_folder(folder) == changed  # what hashing from scratch gives


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile on a CPU needs g++")
def test_a_compiled_denoiser_samples_like_the_eager_one_base_and_fused_lora_alike(tiny_pipeline_dir, tiny_lora_dir):
    """``compile=True`` runs the UNet through torch.compile; the fused LoRA's weights, copied in place, are seen by
    the compiled graph (the LoRA's images, not the base's), with no second compile."""
    import numpy as np
    from torch._dynamo.utils import counters

    from finexl.loading import fuse_lora
    from finexl.sampling import SamplerConfig, sample_images

    cfg = SamplerConfig(num_inference_steps=2)
    prompts, seeds = ["a shape", "a red thing"], [0, 1]
    eager = load_pipeline(tiny_pipeline_dir)
    base = sample_images(eager, prompts, seeds, cfg)
    fuse_lora(eager, load_lora(eager, tiny_lora_dir))
    tuned = sample_images(eager, prompts, seeds, cfg)

    torch._dynamo.reset()
    counters.clear()
    pipe = load_pipeline(tiny_pipeline_dir, compile=True)
    assert pipe.unet._compiled_call_impl is not None
    compiled_base = sample_images(pipe, prompts, seeds, cfg)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the UNet did run compiled
    fused = fuse_lora(pipe, load_lora(pipe, tiny_lora_dir))
    compiled_tuned = sample_images(pipe, prompts, seeds, cfg)
    fused.restore(pipe)
    again = sample_images(pipe, prompts, seeds, cfg)
    assert counters["stats"]["unique_graphs"] == graphs  # weights changed in place: no new compile
    assert np.abs(tuned.astype(int) - base.astype(int)).max() > 5
    for got, want in ((compiled_base, base), (compiled_tuned, tuned), (again, base)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # the same images, up to float rounding


def test_a_failed_compile_is_one_line_naming_the_way_out(tiny_pipeline_dir, monkeypatch):
    import torch._inductor.config as inductor

    from finexl.errors import BackendError
    from finexl.sampling import SamplerConfig, sample_images

    torch._dynamo.reset()
    monkeypatch.setattr(inductor, "fx_graph_cache", False)  # a cached compile would need no compiler
    monkeypatch.setattr(inductor.cpp, "cxx", (None, "/nonexistent/g++"))
    pipe = load_pipeline(tiny_pipeline_dir, compile=True)
    with pytest.raises(BackendError, match="could not compile the denoiser") as info:
        sample_images(pipe, ["a shape"], [0], SamplerConfig(num_inference_steps=1))
    assert "--compile" in str(info.value) and "\n" not in str(info.value)
    torch._dynamo.reset()
