"""LoRA files in the formats people download, on real architectures (random weights, reduced width), loaded at the
strength their reference implementation gives: the update of a module is ``alpha / rank * up @ down``."""

import pytest
import torch
from safetensors.torch import save_file

from finexl.loading import fuse_lora, load_lora
from finexl.testing.architectures import build_pipeline, kohya_lora_state_dict, sgm_name

WIDTH = 1 / 16


@pytest.fixture(scope="module")
def sd15():
    return build_pipeline("sd15", width=WIDTH, text_layers=1)


@pytest.fixture(scope="module")
def sdxl():
    return build_pipeline("sdxl", width=WIDTH, text_layers=1)


def expected_update(down: torch.Tensor, up: torch.Tensor, alpha: float) -> torch.Tensor:
    rank = down.shape[0]
    if down.ndim == 4:  # LoCon: k x k down, 1 x 1 up
        return alpha / rank * torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)
    return alpha / rank * up @ down


def weights(model) -> dict[str, torch.Tensor]:
    """A model's weights by module path (a LoRA layer's wrapped base layer under the layer's own name)."""
    return {k.replace(".base_layer", ""): v.clone() for k, v in model.state_dict().items() if "lora_" not in k}


def loaded_updates(pipe, file, component: str = "unet") -> dict[str, torch.Tensor]:
    """Each weight's change in ``component`` once the LoRA is loaded (through finexl) and fused."""
    model = getattr(pipe, component)
    before = weights(model)
    load_lora(pipe, file)
    saved = fuse_lora(pipe)
    updates = {name.removesuffix(".weight"): weight - before[name] for name, weight in weights(model).items()
               if not torch.equal(weight, before[name])}  # fmt: skip
    saved.restore(pipe)
    after = weights(model)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the base is back
    return updates


def explain_at_32_px(base, lora, tmp_path, tiny_clip_dir) -> dict:
    """`finexl explain` of ``lora`` on the pipeline folder ``base``, 4 pairs at 32 px (the tiny CLIP reads 32 px);
    the explanation's JSON."""
    import json

    from finexl.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na shape\n")
    argv = ["explain", "--base", str(base), "--lora", str(lora), "--clip", str(tiny_clip_dir), "--concepts", "toy",
            "--prompts", str(prompts), "--samples", "4", "--steps", "2", "--height", "32", "--width", "32",
            "--bootstrap", "20", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((tmp_path / "out" / "explanation.json").read_text())


# one module of each type the issue names; the SD 1.5 UNet's diffusers paths
MODULE_TYPES = {
    "attention": "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "attention out": "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0",
    "projection": "down_blocks.1.attentions.0.proj_in",
    "feed-forward": "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
    "resnet convolution": "down_blocks.2.resnets.1.conv1",
    "resnet time embedding": "up_blocks.0.resnets.2.time_emb_proj",
    "shortcut convolution": "up_blocks.3.resnets.0.conv_shortcut",
    "downsampler": "down_blocks.0.downsamplers.0.conv",
    "upsampler": "up_blocks.2.upsamplers.0.conv",
    "time embedding": "time_embedding.linear_1",
}


def test_a_kohya_locon_loads_at_alpha_over_rank_on_every_module_type(sd15, tmp_path):
    state = kohya_lora_state_dict(sd15.unet, rank=8, alpha=4.0, seed=1)
    file = tmp_path / "locon.safetensors"
    save_file(state, str(file))
    updates = loaded_updates(sd15, file)
    n_modules = sum(k.endswith(".alpha") for k in state)
    assert len(updates) == n_modules  # every module of the file, and nothing else
    for kind, module in MODULE_TYPES.items():
        key = "lora_unet_" + module.replace(".", "_")
        want = expected_update(state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"], 4.0)
        torch.testing.assert_close(updates[module], want, rtol=1e-4, atol=1e-7, msg=kind)
    # the same as diffusers' own loader gives (its network alphas applied by peft), module by module
    before = {k: v.clone() for k, v in sd15.unet.state_dict().items()}
    sd15.load_lora_weights(str(file), adapter_name="reference")
    sd15.fuse_lora(adapter_names=["reference"])
    reference = {k.replace(".base_layer", "").removesuffix(".weight"): v - before[k.replace(".base_layer", "")]
                 for k, v in sd15.unet.state_dict().items() if k.replace(".base_layer", "") in before
                 and k.endswith("weight")}  # fmt: skip
    sd15.unfuse_lora()
    sd15.unload_lora_weights()
    for module, update in updates.items():
        torch.testing.assert_close(update, reference[module], rtol=1e-4, atol=1e-7, msg=module)


def test_an_sdxl_kohya_file_in_sd_scripts_block_naming_loads_onto_the_right_modules(sdxl, tmp_path):
    state = kohya_lora_state_dict(sdxl.unet, rank=4, alpha=1.0, seed=2, sdxl_names=True)
    assert any("input_blocks_4_1_transformer_blocks" in k for k in state)  # sd-scripts' naming, not diffusers'
    file = tmp_path / "sdxl_kohya.safetensors"
    save_file(state, str(file))
    updates = loaded_updates(sdxl, file)
    assert len(updates) == sum(k.endswith(".alpha") for k in state)
    for module in ("down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", "down_blocks.2.resnets.0.conv2",
                   "up_blocks.0.attentions.2.proj_out", "up_blocks.1.upsamplers.0.conv", "mid_block.resnets.1.conv1",
                   "add_embedding.linear_2"):  # fmt: skip
        key = "lora_unet_" + sgm_name(module, sdxl.unet.config).replace(".", "_")
        want = expected_update(state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"], 1.0)
        torch.testing.assert_close(updates[module], want, rtol=1e-4, atol=1e-7, msg=module)


def smallest_factor(n: int) -> int:
    return next(f for f in range(2, n + 1) if n % f == 0)


def lycoris_file(unet, kind: str, seed: int) -> tuple[dict, dict]:
    """A LyCORIS LoHa or LoKr file over every module of MODULE_TYPES, and each module's update computed straight from
    the format's definition: LoHa ``(w1a w1b) * (w2a w2b) * alpha / r``; LoKr ``kron(w1, w2) * scale``, scale
    ``alpha / r`` when a factor is decomposed (rank r), 1 when both are full. The LoKr modules cycle through full and
    decomposed factors."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(shape, generator=generator) * 0.3

    state, want = {}, {}
    for i, module in enumerate(MODULE_TYPES.values()):
        key = "lora_unet_" + module.replace(".", "_")
        weight = unet.get_submodule(module).weight
        out, inp, kernel = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
        flat_in = inp * int(torch.tensor(kernel).prod()) if kernel else inp
        if kind == "loha":
            r, alpha = 3, 1.5
            parts = {"hada_w1_a": rand(out, r), "hada_w1_b": rand(r, flat_in), "hada_w2_a": rand(out, r),
                     "hada_w2_b": rand(r, flat_in)}  # fmt: skip
            update = (parts["hada_w1_a"] @ parts["hada_w1_b"]) * (parts["hada_w2_a"] @ parts["hada_w2_b"]) * alpha / r
        else:
            a, b = smallest_factor(out), smallest_factor(inp)
            c, d = out // a, inp // b
            variant, alpha, r = i % 3, 4.0, 2
            w1 = rand(a, b) if variant != 2 else None
            parts = {"lokr_w1": w1} if w1 is not None else {"lokr_w1_a": rand(a, 1), "lokr_w1_b": rand(1, b)}
            if variant == 0:  # both full: alpha is not applied
                parts["lokr_w2"] = rand(c, d, *kernel)
                scale = 1.0
            else:  # w2 decomposed at rank 2 (variant 2: w1 too, at rank 1; the scale takes w1's rank, as LyCORIS)
                parts["lokr_w2_a"], parts["lokr_w2_b"] = rand(c, r), rand(r, d * (flat_in // inp))
                scale = alpha / (1 if variant == 2 else r)
            w1 = parts["lokr_w1"] if "lokr_w1" in parts else parts["lokr_w1_a"] @ parts["lokr_w1_b"]
            w2 = parts["lokr_w2"] if "lokr_w2" in parts else (parts["lokr_w2_a"] @ parts["lokr_w2_b"]).reshape(
                c, d, *kernel)  # fmt: skip
            update = torch.kron(w1.reshape(a, b, *[1] * len(kernel)), w2) * scale
        state.update({f"{key}.{name}": tensor for name, tensor in parts.items()})
        state[f"{key}.alpha"] = torch.tensor(alpha)
        want[module] = update.reshape(weight.shape)
    return state, want


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_a_lycoris_loha_or_lokr_file_loads_at_its_definition_strength_on_every_module_type(sd15, tmp_path, kind):
    state, want = lycoris_file(sd15.unet, kind, seed=9)
    file = tmp_path / f"{kind}.safetensors"
    save_file(state, str(file))
    updates = loaded_updates(sd15, file)
    assert set(updates) == set(want)
    for kind_of_module, module in MODULE_TYPES.items():
        torch.testing.assert_close(updates[module], want[module], rtol=1e-4, atol=1e-6, msg=kind_of_module)


@pytest.mark.parametrize("suffixes, name", [
    (("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "alpha"), "LoHa with Tucker"),
    (("lokr_w1", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha"), "LoKr with Tucker"),
    (("lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha"), "Tucker"),
    (("oft_blocks", "alpha"), "OFT"),
])  # fmt: skip
def test_an_adapter_format_finexl_does_not_load_is_refused_in_one_short_line(sd15, tmp_path, suffixes, name):
    from finexl.cli import main
    from finexl.loading import LoraError

    modules = [f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_{x}" for x in "qkv"] * 300
    state = {f"{m}_{i}.{s}": torch.zeros(2, 2) for i, m in enumerate(modules) for s in suffixes}
    file = tmp_path / "adapter.safetensors"
    save_file(state, str(file))
    with pytest.raises(LoraError, match=name) as err:
        load_lora(sd15, file)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200
    # finexl explain refuses it at its first stage, before any image, with exit 2
    assert main(["explain", "--lora", str(file), "--cache", str(tmp_path / "cache"), "-q"]) == 2
    assert not (tmp_path / "cache" / "images").exists()


def dora_merged(weight: torch.Tensor, update: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """The DoRA weight: ``W + dW`` with each output row rescaled to its magnitude (LyCORIS, peft)."""
    merged = weight + update
    norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (merged.ndim - 1))
    return merged * magnitude.reshape(norm.shape) / norm


def test_a_lycoris_dora_file_loads_at_its_reference_strength_on_every_module_type(sd15, tmp_path):
    """A kohya/LyCORIS LoCon with ``dora_scale`` (over the output channels, LyCORIS' default): each weight becomes
    ``dora_scale * (W + dW) / ||W + dW||`` row by row, as LyCORIS merges it, not ``W + dW`` as diffusers' own loader
    gives after dropping the scales."""
    state = kohya_lora_state_dict(sd15.unet, rank=4, alpha=2.0, seed=5, std=0.05)
    base = weights(sd15.unet)
    generator = torch.Generator().manual_seed(6)
    want = {}
    for key in [k.removesuffix(".alpha") for k in state if k.endswith(".alpha")]:
        module = next(name for name, _ in sd15.unet.named_modules() if "lora_unet_" + name.replace(".", "_") == key)
        update = expected_update(state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"], 2.0)
        merged = base[f"{module}.weight"] + update
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1)
        magnitude = norm * (0.7 + 0.6 * torch.rand(norm.shape, generator=generator))
        state[f"{key}.dora_scale"] = magnitude.reshape(-1, *[1] * (merged.ndim - 1))  # LyCORIS' (out, 1, ...)
        want[module] = dora_merged(base[f"{module}.weight"], update, magnitude)
    file = tmp_path / "dora.safetensors"
    save_file(state, str(file))
    updates = loaded_updates(sd15, file)
    assert len(updates) == len(want)
    for module, weight in want.items():
        torch.testing.assert_close(base[f"{module}.weight"] + updates[module], weight, rtol=1e-4, atol=1e-6)
    for kind, module in MODULE_TYPES.items():
        key = "lora_unet_" + module.replace(".", "_")
        got = base[f"{module}.weight"] + updates[module]
        torch.testing.assert_close(got, want[module], rtol=1e-4, atol=1e-6, msg=kind)
        # and not the plain LoRA that dropping the magnitudes gives
        plain = expected_update(state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"], 2.0)
        assert (got - base[f"{module}.weight"] - plain).abs().max() > 1e-3, kind


def test_a_peft_dora_adapter_saved_by_diffusers_loads_at_peft_strength(tmp_path):
    """A DoRA adapter trained with peft and saved in diffusers' format (``lora_magnitude_vector`` keys, rank and
    alpha in the metadata) merges to exactly the weights peft's own merge gives."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer
    from peft.utils import get_peft_model_state_dict

    reference = build_pipeline("sd15", width=WIDTH, text_layers=1)
    targets = ["to_q", "to_out.0", "proj_in", "ff.net.2", "conv1", "time_emb_proj"]
    config = LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights="gaussian", target_modules=targets)
    reference.unet.add_adapter(config, adapter_name="dora")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in reference.unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
            elif "lora_magnitude_vector" in name:
                parameter.mul_(0.7 + 0.6 * torch.rand(parameter.shape, generator=generator))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(reference.unet, adapter_name="dora"))
    assert any("lora_magnitude_vector" in k for k in state)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "dora", unet_lora_layers=state,
                                              unet_lora_adapter_metadata=config.to_dict())  # fmt: skip
    for module in reference.unet.modules():
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=["dora"])
    merged = weights(reference.unet)

    pipe = build_pipeline("sd15", width=WIDTH, text_layers=1)  # the same seed: the same base weights
    base = weights(pipe.unet)
    updates = loaded_updates(pipe, tmp_path / "dora")
    assert len(updates) == sum(k.endswith("lora_magnitude_vector") for k in state) > 50
    for module, update in updates.items():
        torch.testing.assert_close(base[f"{module}.weight"] + update, merged[f"{module}.weight"], rtol=1e-4,
                                   atol=1e-6, msg=module)  # fmt: skip


def test_dora_over_input_channels_is_refused_in_one_line(sd15, tmp_path):
    from finexl.loading import LoraError

    module = "lora_unet_" + MODULE_TYPES["attention"].replace(".", "_")
    state = {k: v for k, v in kohya_lora_state_dict(sd15.unet, rank=2, seed=8).items() if k.startswith(module + ".")}
    in_features = state[f"{module}.lora_down.weight"].shape[1]
    out_features = state[f"{module}.lora_up.weight"].shape[0]
    assert in_features != out_features or in_features > 1
    state[f"{module}.dora_scale"] = torch.ones(
        1, in_features + (in_features == out_features)
    )  # LyCORIS wd_on_out=False
    file = tmp_path / "dora_in.safetensors"
    save_file(state, str(file))
    with pytest.raises(LoraError, match="input-channel DoRA") as err:
        load_lora(sd15, file)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    # magnitudes for some modules of a component only: peft cannot make part of an adapter DoRA
    mixed = kohya_lora_state_dict(sd15.unet, rank=2, seed=8)
    mixed[f"{module}.dora_scale"] = torch.ones(out_features, 1)
    save_file(mixed, str(file))
    with pytest.raises(LoraError, match="all DoRA or all plain") as err:
        load_lora(sd15, file)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_diffusers_old_attention_processor_files_load_onto_the_unet(sd15, tmp_path):
    """``save_attn_procs`` files name UNet modules without a component (``down_blocks...processor.to_q_lora``) and
    carry no alpha: the update is ``up @ down``."""
    state = {}
    for block in ("down_blocks.0.attentions.0", "up_blocks.3.attentions.1"):
        for x in ("q", "k", "v", "out"):
            layer = sd15.unet.get_submodule(f"{block}.transformer_blocks.0.attn2.to_{x}{'.0' if x == 'out' else ''}")
            key = f"{block}.transformer_blocks.0.attn2.processor.to_{x}_lora"
            state[f"{key}.down.weight"] = torch.randn(4, layer.in_features) * 0.05
            state[f"{key}.up.weight"] = torch.randn(layer.out_features, 4) * 0.05
    file = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(state, str(file))
    updates = loaded_updates(sd15, file)
    assert len(updates) == 8
    key = "up_blocks.3.attentions.1.transformer_blocks.0.attn2.processor.to_out_lora"
    torch.testing.assert_close(
        updates["up_blocks.3.attentions.1.transformer_blocks.0.attn2.to_out.0"],
        state[f"{key}.up.weight"] @ state[f"{key}.down.weight"],
        rtol=1e-4,
        atol=1e-7,
    )


def test_an_sdxl_kohya_lora_explains_end_to_end(sdxl, tmp_path, tiny_clip_dir):
    """An SDXL pipeline folder (two text encoders, pooled embeddings, time ids) and a kohya file in sd-scripts'
    naming, through `finexl explain` at 32 px (the tiny CLIP reads 32 px): the LoRA changes the images, so the
    divergence is not zero."""

    base = tmp_path / "sdxl"
    sdxl.save_pretrained(base)
    lora = tmp_path / "sdxl_kohya.safetensors"
    save_file(kohya_lora_state_dict(sdxl.unet, rank=4, alpha=4.0, seed=3, std=0.2, sdxl_names=True), str(lora))
    e = explain_at_32_px(base, lora, tmp_path, tiny_clip_dir)
    assert e["divergence"]["n_pairs"] == 4 and e["divergence"]["mean_pair_distance"] > 0
    assert e["settings"]["sampler"]["height"] == 32 and e["settings"]["sampler"]["width"] == 32
    assert e["settings"]["sampler"]["scheduler_class"] == "UniPCMultistepScheduler"  # explain's default sampler


def test_training_a_pipeline_class_the_trainer_does_not_know_is_refused_up_front(sd15, tmp_path, capsys):
    import json

    from finexl.cli import main

    base = tmp_path / "other"
    sd15.save_pretrained(base)
    index = json.loads((base / "model_index.json").read_text())
    (base / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusion3Pipeline"}))
    (tmp_path / "data").mkdir()
    capsys.readouterr()  # what saving the fixture printed
    code = main(["train", "lora", "--base", str(base), "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "lora")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "StableDiffusion3Pipeline" in err and "cannot train" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "lora").exists()


def train_tiny(pipe, out, **settings):
    """Two LoRA steps on four random 32 px images; the saved LoRA's tensors by name."""
    import numpy as np
    from safetensors.torch import load_file

    from finexl.train.data import ImageSet
    from finexl.train.trainer import TrainConfig, train

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    data = ImageSet(
        images, ["a red circle", "a blue square", "a red circle", "a shape"], [f"{i}.png" for i in range(4)]
    )
    config = TrainConfig(rank=2, alpha=4.0, max_steps=2, batch_size=2, resolution=32, lr=1e-2, lr_warmup_steps=0,
                         **settings)  # fmt: skip
    result = train(pipe, data, config, out, progress=False)
    assert result.steps == 2 and np.isfinite(result.loss)
    return load_file(str(out / "pytorch_lora_weights.safetensors"))


def trained_update(saved: dict, module: str, scale: float = 2.0) -> torch.Tensor:
    down, up = saved[f"{module}.lora_A.weight"], saved[f"{module}.lora_B.weight"]
    return scale * (torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) if down.ndim == 4 else up @ down)


def test_train_lora_on_sdxl_trains_the_unet_and_both_text_encoders(tmp_path):
    """`finexl train lora` on SDXL (two text encoders, pooled embeddings, size ids): the file holds the UNet's and
    both encoders' LoRAs, and loads back onto a fresh SDXL at alpha / rank, module by module."""
    from finexl.train.api import check_trainable

    base = tmp_path / "sdxl"
    build_pipeline("sdxl", width=WIDTH, text_layers=2).save_pretrained(base)
    check_trainable(base)  # an SDXL base is accepted
    from finexl.loading import load_pipeline

    saved = train_tiny(load_pipeline(base), tmp_path / "lora", train_text_encoder=True)
    components = {k.split(".", 1)[0] for k in saved}
    assert components == {"unet", "text_encoder", "text_encoder_2"}
    # every up matrix was trained but those of the first encoder's last layer: SDXL reads that encoder's
    # penultimate hidden states (the second's last layer makes the pooled embedding)
    untrained = {k for k in saved if ".lora_B." in k and saved[k].abs().max() == 0}
    assert untrained == {f"text_encoder.encoder.layers.1.self_attn.{m}.lora_B.weight"
                         for m in ("q_proj", "k_proj", "v_proj", "out_proj")}  # fmt: skip
    fresh = load_pipeline(base)
    for component, module in [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"),
                              ("unet", "up_blocks.0.resnets.1.conv1"),
                              ("text_encoder", "encoder.layers.0.self_attn.q_proj"),
                              ("text_encoder_2", "text_model.encoder.layers.0.self_attn.out_proj")]:  # fmt: skip
        updates = loaded_updates(fresh, tmp_path / "lora", component)
        torch.testing.assert_close(updates[module], trained_update(saved, f"{component}.{module}"), rtol=1e-4,
                                   atol=1e-8, msg=f"{component}.{module}")  # fmt: skip


def test_train_lora_on_flux_trains_the_transformer(tmp_path):
    """`finexl train lora` on Flux: the rectified-flow loss on packed latents through the transformer; the file
    holds transformer LoRAs only, which load back at alpha / rank; training its text encoders is refused."""
    from finexl.errors import ConfigError
    from finexl.loading import load_pipeline
    from finexl.train.api import check_trainable

    base = tmp_path / "flux"
    build_pipeline("flux", width=WIDTH, text_layers=1).save_pretrained(base)
    check_trainable(base)
    saved = train_tiny(load_pipeline(base), tmp_path / "lora")
    assert {k.split(".", 1)[0] for k in saved} == {"transformer"}
    assert any(".single_transformer_blocks." in k for k in saved) and any(".ff.net.2." in k for k in saved)
    assert all(saved[k].abs().max() > 0 for k in saved if ".lora_B." in k)
    updates = loaded_updates(load_pipeline(base), tmp_path / "lora", "transformer")
    for module in ("transformer_blocks.0.attn.to_q", "single_transformer_blocks.1.proj_out"):
        torch.testing.assert_close(updates[module], trained_update(saved, f"transformer.{module}"), rtol=1e-4,
                                   atol=1e-8, msg=module)  # fmt: skip
    with pytest.raises(ConfigError, match="transformer only"):
        train_tiny(load_pipeline(base), tmp_path / "lora_te", train_text_encoder=True)


@pytest.fixture(scope="module")
def flux():
    return build_pipeline("flux", width=WIDTH, text_layers=1)


def flux_lora(pipe, folder, rank=4, alpha=8.0):
    """A diffusers-format Flux LoRA (what diffusers' Flux training scripts save): peft adapter on the transformer's
    attention, MLP and output layers, rank and alpha in the file's metadata."""
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(4)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_mlp", "ff.net.2"])  # fmt: skip
    pipe.transformer.add_adapter(config, adapter_name="made")
    layers = get_peft_model_state_dict(pipe.transformer, adapter_name="made")
    pipe.transformer.delete_adapters("made")
    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=layers,
                                   transformer_lora_adapter_metadata=config.to_dict())  # fmt: skip
    return folder / "pytorch_lora_weights.safetensors"


def test_a_flux_lora_loads_at_alpha_over_rank_and_explains_end_to_end(flux, tmp_path, tiny_clip_dir):

    from safetensors.torch import load_file

    file = flux_lora(flux, tmp_path / "lora")
    state = load_file(str(file))
    updates = loaded_updates(flux, file, "transformer")
    assert len(updates) == len(state) // 2
    for module in ("transformer_blocks.1.attn.to_k", "single_transformer_blocks.0.proj_mlp",
                   "transformer_blocks.0.ff.net.2"):  # fmt: skip
        want = 8.0 / 4 * state[f"transformer.{module}.lora_B.weight"] @ state[f"transformer.{module}.lora_A.weight"]
        torch.testing.assert_close(updates[module], want, rtol=1e-4, atol=1e-7, msg=module)

    base = tmp_path / "flux"
    flux.save_pretrained(base)
    e = explain_at_32_px(base, file, tmp_path, tiny_clip_dir)
    assert e["divergence"]["n_pairs"] == 4 and e["divergence"]["mean_pair_distance"] > 0
    # a flow-matching base keeps its own scheduler under explain's default UniPC
    assert e["settings"]["sampler"]["scheduler_class"] == "FlowMatchEulerDiscreteScheduler"


def test_a_kohya_flux_lora_loads_at_alpha_over_rank(flux, tmp_path):
    """sd-scripts' Flux naming: fused q/k/v (``double_blocks_i_img_attn_qkv``) split onto to_q, to_k, to_v, each at
    alpha / rank. (``single_blocks_i_linear1`` is split at FLUX.1-dev's full widths only: the next test.)"""
    t = flux.transformer
    inner = t.config.num_attention_heads * t.config.attention_head_dim
    mlp = t.single_transformer_blocks[0].proj_mlp.out_features
    generator = torch.Generator().manual_seed(5)
    state, rank, alpha = {}, 4, 2.0
    for i in range(2):
        for key, n_in, n_out in ((f"double_blocks_{i}_img_attn_qkv", inner, 3 * inner),
                                 (f"double_blocks_{i}_txt_attn_proj", inner, inner),
                                 (f"single_blocks_{i}_linear2", inner + mlp, inner)):  # fmt: skip
            state[f"lora_unet_{key}.lora_down.weight"] = torch.randn(rank, n_in, generator=generator) * 0.1
            state[f"lora_unet_{key}.lora_up.weight"] = torch.randn(n_out, rank, generator=generator) * 0.1
            state[f"lora_unet_{key}.alpha"] = torch.tensor(alpha)
    file = tmp_path / "flux_kohya.safetensors"
    save_file(state, str(file))
    updates = loaded_updates(flux, file, "transformer")
    assert len(updates) == 2 * (3 + 1 + 1)

    def want(key):
        return alpha / rank * state[f"lora_unet_{key}.lora_up.weight"] @ state[f"lora_unet_{key}.lora_down.weight"]

    qkv = torch.cat([updates[f"transformer_blocks.1.attn.to_{x}"] for x in "qkv"])
    torch.testing.assert_close(qkv, want("double_blocks_1_img_attn_qkv"), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(updates["transformer_blocks.0.attn.to_add_out"], want("double_blocks_0_txt_attn_proj"),
                               rtol=1e-4, atol=1e-8)  # fmt: skip
    torch.testing.assert_close(updates["single_transformer_blocks.1.proj_out"], want("single_blocks_1_linear2"),
                               rtol=1e-4, atol=1e-8)  # fmt: skip


def test_a_kohya_flux_single_block_linear1_splits_onto_its_four_layers_at_full_width(flux, tmp_path):
    """sd-scripts' ``single_blocks_i_linear1`` (q, k, v and the MLP input fused, 3072 -> 3 x 3072 + 12288) splits onto
    ``attn.to_q``, ``to_k``, ``to_v`` and ``proj_mlp`` at alpha / rank. diffusers' converter knows only FLUX.1-dev's
    widths, so this runs on a transformer of those widths with one double and one single block (the reduced
    fixture's text encoders and VAE around it)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from finexl.testing.architectures import FLUX_TRANSFORMER

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**{
        **FLUX_TRANSFORMER, "num_layers": 1, "num_single_layers": 1,
        "joint_attention_dim": flux.text_encoder_2.config.d_model,
        "pooled_projection_dim": flux.text_encoder.config.hidden_size,
    })  # fmt: skip
    pipe = FluxPipeline(scheduler=flux.scheduler, vae=flux.vae, text_encoder=flux.text_encoder,
                        tokenizer=flux.tokenizer, text_encoder_2=flux.text_encoder_2, tokenizer_2=flux.tokenizer_2,
                        transformer=transformer)  # fmt: skip
    block = transformer.single_transformer_blocks[0]
    parts = {"to_q": block.attn.to_q, "to_k": block.attn.to_k, "to_v": block.attn.to_v, "proj_mlp": block.proj_mlp}
    assert [p.out_features for p in parts.values()] == [3072, 3072, 3072, 12288]
    before = {name: layer.weight.detach().clone() for name, layer in parts.items()}
    generator = torch.Generator().manual_seed(11)
    rank, alpha, key = 4, 2.0, "lora_unet_single_blocks_0_linear1"
    down, up = (
        torch.randn(rank, 3072, generator=generator) * 0.1,
        torch.randn(3 * 3072 + 12288, rank, generator=generator) * 0.1,
    )
    file = tmp_path / "flux_linear1.safetensors"
    save_file({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(alpha)},
              str(file))  # fmt: skip
    load_lora(pipe, file)
    saved = fuse_lora(pipe)
    fused = [getattr(layer, "base_layer", layer).weight for layer in (block.attn.to_q, block.attn.to_k,
                                                                       block.attn.to_v, block.proj_mlp)]  # fmt: skip
    got = torch.cat(fused) - torch.cat(list(before.values()))
    torch.testing.assert_close(got, alpha / rank * up @ down, rtol=1e-4, atol=1e-6)
    saved.restore(pipe)
    assert all(torch.equal(parts[name].weight, weight) for name, weight in before.items())


def test_a_malformed_lycoris_module_is_refused_in_one_line_naming_it(sd15, tmp_path):
    from finexl.loading import LoraError

    state, _ = lycoris_file(sd15.unet, "loha", seed=12)
    key = "lora_unet_" + MODULE_TYPES["feed-forward"].replace(".", "_")
    del state[f"{key}.hada_w2_b"]  # a factor missing
    file = tmp_path / "broken_loha.safetensors"
    save_file(state, str(file))
    with pytest.raises(LoraError, match=f"{key} .*incomplete or malformed") as err:
        load_lora(sd15, file)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    state, _ = lycoris_file(sd15.unet, "lokr", seed=12)
    state[f"{key}.lokr_w1"] = torch.full_like(state[f"{key}.lokr_w1"], float("nan"))  # NaN weights
    save_file(state, str(file))
    with pytest.raises(LoraError, match="NaN"):
        load_lora(sd15, file)
