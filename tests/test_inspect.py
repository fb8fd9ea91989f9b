"""``finexl inspect`` on files of every format, with metadata as the trainers write it."""

import json

import pytest
import torch
from safetensors.torch import save_file

from finexl.cli import main
from finexl.loading.inspection import inspect, trigger_from
from finexl.loading.lora_formats import LoraError


def _pair(out: int, inp: int, rank: int, seed: int, kernel: int | None = None):
    g = torch.Generator().manual_seed(seed)
    down = torch.randn((rank, inp, kernel, kernel) if kernel else (rank, inp), generator=g) * 0.1
    up = torch.randn((out, rank, 1, 1) if kernel else (out, rank), generator=g) * 0.1
    return down, up


def kohya_sdxl(tmp_path, metadata: dict):
    """A kohya SDXL LoCon with sd-scripts' block names, at SDXL's published widths (cross-attention 2048), and
    a second text encoder."""
    state = {}
    modules = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (640, 2048, None),
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": (640, 640, None),
        "lora_unet_input_blocks_4_0_in_layers_2": (640, 320, 3),
        "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_v": (1280, 2048, None),
        "lora_unet_output_blocks_0_1_proj_in": (1280, 1280, None),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj": (1280, 1280, None),
    }
    for i, (name, (out, inp, kernel)) in enumerate(modules.items()):
        down, up = _pair(out, inp, 8, i, kernel)
        state[f"{name}.lora_down.weight"], state[f"{name}.lora_up.weight"] = down, up
        state[f"{name}.alpha"] = torch.tensor(4.0)
    path = tmp_path / "sdxl_locon.safetensors"
    save_file(state, path, metadata=metadata)
    return path, state


SDXL_METADATA = {
    "ss_sd_model_name": "sd_xl_base_1.0.safetensors",
    "ss_base_model_version": "sdxl_base_v1-0",
    "ss_num_train_images": "40",
    "ss_max_train_steps": "1600",
    "ss_resolution": "(1024, 1024)",
    "ss_learning_rate": "0.0001",
    "ss_network_module": "networks.lora",
    "ss_network_dim": "8",
    "ss_network_alpha": "4.0",
    "ss_tag_frequency": json.dumps({"10_zkw style": {"zkw style": 40, "1girl": 52, "solo": 30, "red hair": 12}}),
    "modelspec.trigger_phrase": "zkw style",
}


def test_a_kohya_sdxl_locon_with_its_metadata(tmp_path):
    path, state = kohya_sdxl(tmp_path, SDXL_METADATA)
    i = inspect(path)
    assert i.format == "kohya/A1111 LoCon (LyCORIS)"
    assert i.family == "sdxl" and i.claimed_family == "sdxl" and not i.family_mismatch
    groups = {(g.component, g.block): g for g in i.groups}
    assert set(groups) == {
        ("text_encoder_2", "attention"),
        ("unet", "down attention"),
        ("unet", "down resnet"),
        ("unet", "mid attention"),
        ("unet", "up attention"),
    }
    assert groups[("unet", "down attention")].modules == 2 and groups[("unet", "down attention")].ranks == [8]
    assert groups[("unet", "down attention")].alphas == [4.0]
    # the norm is the Frobenius norm of (alpha / rank) up @ down, the convolution's down flattened over its kernel
    name = "lora_unet_input_blocks_4_0_in_layers_2"
    down, up = state[f"{name}.lora_down.weight"], state[f"{name}.lora_up.weight"]
    expected = (0.5 * up.reshape(640, 8) @ down.reshape(8, -1)).norm().item()
    assert groups[("unet", "down resnet")].norm == pytest.approx(expected, rel=1e-4)
    names = ("input_blocks_4_1_transformer_blocks_0_attn2_to_k", "input_blocks_4_1_transformer_blocks_0_attn1_to_q")
    norms = [
        (0.5 * state[f"lora_unet_{n}.lora_up.weight"] @ state[f"lora_unet_{n}.lora_down.weight"]).norm() for n in names
    ]
    assert groups[("unet", "down attention")].norm == pytest.approx(float(torch.stack(norms).norm()), rel=1e-4)
    assert groups[("unet", "down attention")].largest == pytest.approx(float(max(norms)), rel=1e-4)
    assert i.parameters == sum(t.numel() for k, t in state.items() if not k.endswith(".alpha"))
    assert (
        i.training["images"] == "40" and i.training["steps"] == "1600" and i.training["base model"].startswith("sd_xl")
    )
    assert i.tags[:2] == [("1girl", 52), ("zkw style", 40)]
    assert i.trigger == "zkw style" and trigger_from(i) == "zkw style"
    text = i.table()
    assert "SDXL" in text and "zkw style (40)" in text and "down resnet" in text


def test_the_metadata_claiming_another_base_is_named(tmp_path):
    path, _ = kohya_sdxl(tmp_path, {"ss_base_model_version": "sd_v1", "ss_tag_frequency": "{not json"})
    i = inspect(path)
    assert i.family == "sdxl" and i.claimed_family == "sd1" and i.family_mismatch
    assert any("claims SD 1.x" in p for p in i.problems)
    assert any(p.startswith("ss_tag_frequency is not a JSON object") for p in i.problems) and i.tags == []
    assert i.groups  # the rest is still read


def test_trigger_guess_skips_common_tags(tmp_path):
    metadata = {"ss_tag_frequency": json.dumps({"a": {"1girl": 50, "solo": 40, "mrkx": 30}, "b": {"mrkx": 25}})}
    path, _ = kohya_sdxl(tmp_path, metadata)
    i = inspect(path)
    assert i.trigger is None and i.tags[0] == ("mrkx", 55) and trigger_from(i) == "mrkx"


def test_a_kohya_dreambooth_layout_gives_the_instance_and_class_prompts(tmp_path, capsys):
    from finexl.loading.inspection import dreambooth_of

    metadata = {
        "ss_dataset_dirs": json.dumps({"10_ohwx dog": {"n_repeats": 10, "img_count": 20}}),
        "ss_reg_dataset_dirs": json.dumps(
            {"1_cat": {"n_repeats": 1, "img_count": 200}, "1_dog": {"n_repeats": 1, "img_count": 200}}
        ),
        "ss_tag_frequency": json.dumps({"10_ohwx dog": {"ohwx dog": 20}}),
    }
    path, _ = kohya_sdxl(tmp_path, metadata)
    i = inspect(path)
    assert i.dreambooth == ("dog", "ohwx dog") == dreambooth_of(path) and i.identifier == "ohwx"
    assert trigger_from(i) == "ohwx"  # the identifier before the caption tag "ohwx dog"
    assert main(["inspect", str(path)]) == 0
    assert "instance prompt 'ohwx dog', class prompt 'dog'" in capsys.readouterr().out
    # not DreamBooth: no regularization folders, two training folders, a folder that is not REPEATS_NAME, no class
    for train, reg in (
        ({"10_ohwx dog": {}}, None),
        ({"10_ohwx dog": {}, "5_ohwx dog sitting": {}}, {"1_dog": {}}),
        ({"ohwx dog": {}}, {"1_dog": {}}),
        ({"10_ohwx dog": {}}, {"1_cat": {}}),
    ):
        metadata = {"ss_dataset_dirs": json.dumps(train)} | ({"ss_reg_dataset_dirs": json.dumps(reg)} if reg else {})
        path, _ = kohya_sdxl(tmp_path, metadata)
        assert inspect(path).dreambooth is None and dreambooth_of(path) is None, (train, reg)
    path, _ = kohya_sdxl(tmp_path, {"ss_dataset_dirs": "{not json", "ss_reg_dataset_dirs": "[]"})
    assert dreambooth_of(path) is None


def test_lycoris_loha_and_a_flux_lora(tmp_path):
    g = torch.Generator().manual_seed(3)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    loha = {
        f"{name}.hada_w1_a": torch.randn(320, 4, generator=g), f"{name}.hada_w1_b": torch.randn(4, 768, generator=g),
        f"{name}.hada_w2_a": torch.randn(320, 4, generator=g), f"{name}.hada_w2_b": torch.randn(4, 768, generator=g),
        f"{name}.alpha": torch.tensor(2.0),
    }  # fmt: skip
    save_file(loha, tmp_path / "loha.safetensors")
    i = inspect(tmp_path / "loha.safetensors")
    assert i.format == "LyCORIS LoHa" and i.family == "sd1"
    dw = (loha[f"{name}.hada_w1_a"] @ loha[f"{name}.hada_w1_b"]) * (
        loha[f"{name}.hada_w2_a"] @ loha[f"{name}.hada_w2_b"]
    )
    assert i.groups[0].norm == pytest.approx((dw * 0.5).norm().item(), rel=1e-4)  # alpha / r1 = 2 / 4

    flux = {}
    for k, module in enumerate(("transformer_blocks.0.attn.to_q", "single_transformer_blocks.3.proj_out")):
        down, up = _pair(64, 64, 4, k)
        flux[f"transformer.{module}.lora_A.weight"], flux[f"transformer.{module}.lora_B.weight"] = down, up
    save_file(flux, tmp_path / "flux.safetensors", metadata={"modelspec.architecture": "flux-1-dev/lora"})
    i = inspect(tmp_path / "flux.safetensors")
    assert i.family == "flux" and i.claimed_family == "flux"
    assert [(g.component, g.block) for g in i.groups] == [("transformer", "double"), ("transformer", "single")]
    assert i.groups[0].alphas == [4.0]  # no alpha recorded: alpha is the rank (scale 1)


def test_peft_dora_with_its_adapter_config(tmp_path):
    module = "base_model.model.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v"
    down, up = _pair(640, 1024, 4, 7)
    state = {f"{module}.lora_A.weight": down, f"{module}.lora_B.weight": up,
             f"{module}.lora_magnitude_vector": torch.ones(640)}  # fmt: skip
    save_file(state, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "use_dora": True}))
    i = inspect(tmp_path / "adapter_model.safetensors")
    assert i.format == "peft + DoRA" and i.family == "sd2"
    assert i.groups[0].alphas == [8.0] and i.groups[0].norm == pytest.approx((2 * up @ down).norm().item(), rel=1e-4)


def test_a_finexl_lora_shows_its_training_record(capsys):
    i = inspect("toy:red")
    assert i.format == "diffusers (peft names)" and i.family == "toy"
    assert i.finexl_record["steps done"] == 400 and i.finexl_record["method"] == "lora"
    assert {g.block for g in i.groups} == {"down attention", "down resnet", "mid attention", "mid resnet",
                                           "up attention", "up resnet"}  # fmt: skip
    assert main(["inspect", "toy:red", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "toy" and out["modules"] == 106 and out["finexl_record"]["rank / alpha"] == "4 / 4.0"


def test_bad_files_are_one_line(tmp_path, capsys):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    assert main(["inspect", str(tmp_path / "broken.safetensors")]) == 2
    assert "could not read the LoRA file" in capsys.readouterr().err
    save_file({"weight": torch.zeros(2, 2)}, tmp_path / "plain.safetensors")
    with pytest.raises(LoraError, match="holds no LoRA matrices"):
        inspect(tmp_path / "plain.safetensors")
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_module_of_a_real_sdxl_layout_finds_its_block(tmp_path):
    # sd-scripts' names for every linear layer and convolution of SDXL's UNet (at 1/16 of its channels)
    from finexl.testing.architectures import build_pipeline, kohya_lora_state_dict

    pipe = build_pipeline("sdxl", width=1 / 16, text_layers=1)
    save_file(kohya_lora_state_dict(pipe.unet, sdxl_names=True), tmp_path / "sdxl.safetensors")
    i = inspect(tmp_path / "sdxl.safetensors")
    blocks = {g.block: g.modules for g in i.groups}
    assert blocks.pop("other") == 4  # the time and label embeddings' two layers each
    assert set(blocks) == {"down attention", "down resnet", "down sampler", "mid attention", "mid resnet",
                           "up attention", "up resnet", "up sampler"}  # fmt: skip
    assert i.family == "unknown" and i.family_evidence.startswith("an SDXL layout with cross-attention width 128")
