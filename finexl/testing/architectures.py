"""Real text-to-image architectures with random weights, built from their published configs.

For plumbing, formats, speed and memory only: random weights never stand in for results. ``width=1.0`` is the
published size (SD 1.5: an 860 M-parameter UNet); a smaller ``width`` divides every channel count by the same factor
and keeps the structure (block types, layers per block, attention layout, conditioning), which is what LoRA key
names, loaders and pipelines depend on. Nothing is downloaded: the tokenizer is the toy world's (a CLIP tokenizer
with a small vocabulary), so prompt token ids differ from the real ones, which no timing or format depends on.

    from finexl.testing.architectures import build_pipeline
    pipe = build_pipeline("sd15", width=0.125)   # a StableDiffusionPipeline at 1/8 of the channels
    pipe.save_pretrained("tiny-sd15")
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from finexl.errors import ConfigError
from finexl.toyworld.tokenizer import build_tokenizer

# The UNet configs of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json)
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
# vae/config.json of both (SDXL's differs in scaling factor and sample size)
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
)
# text_encoder/config.json: CLIP ViT-L/14's text tower; SDXL's second encoder is OpenCLIP ViT-bigG/14's
CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    projection_dim=768,
    hidden_act="quick_gelu",
    max_position_embeddings=77,
)
CLIP_BIGG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    hidden_act="gelu",
    max_position_embeddings=77,
)
# black-forest-labs/FLUX.1-dev: transformer/config.json, and the T5-XXL encoder (text_encoder_2/config.json)
FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
T5_XXL = dict(
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
)
KINDS = ("sd15", "sdxl", "flux")
# openai/clip-vit-large-patch14: the vision tower of CLIP ViT-L/14 (the text tower is CLIP_L)
VIT_L_14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
    image_size=224,
    projection_dim=768,
    hidden_act="quick_gelu",
)
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _scaled(channels, width: float, groups: int) -> tuple[int, ...]:
    """Channel counts divided by ``1 / width``, kept multiples of the group norm's groups."""
    return tuple(max(groups, int(round(c * width / groups)) * groups) for c in channels)


def _text_config(base: dict, width: float, tokenizer, layers: int | None):
    from transformers import CLIPTextConfig

    heads = max(1, int(round(base["num_attention_heads"] * width)))
    head_dim = base["hidden_size"] // base["num_attention_heads"]
    hidden = heads * head_dim
    ratio = hidden / base["hidden_size"]
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=int(base["intermediate_size"] * ratio),
        projection_dim=int(base["projection_dim"] * ratio),
        num_hidden_layers=layers or base["num_hidden_layers"],
        hidden_act=base["hidden_act"],
        max_position_embeddings=base["max_position_embeddings"],
    )


def build_pipeline(kind: str = "sd15", width: float = 1.0, text_layers: int | None = None, seed: int = 0):
    """A diffusers pipeline of ``kind`` (``sd15``, ``sdxl`` or ``flux``) with random weights.

    Args:
        kind: which architecture.
        width: fraction of the published channel counts (1.0: full size; 1/8 or less for tests). UNet attention
            head counts follow the channels (SD 1.5: 8 heads; SDXL: heads of 64 channels, as published); a Flux
            transformer below full size has 2 double and 2 single blocks with heads of 16 channels.
        text_layers: text encoder layers (default the published count).
        seed: torch seed of the random weights.
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if kind not in KINDS:
        raise ConfigError(f"unknown architecture {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0 < width <= 1:
        raise ConfigError(f"width must be in (0, 1], got {width}")
    torch.manual_seed(seed)
    groups = 32 if width == 1 else 8
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp, seed=seed)
    vae = AutoencoderKL(
        **{
            **VAE,
            "block_out_channels": _scaled(VAE["block_out_channels"], width, groups),
            "norm_num_groups": groups,
            "sample_size": 512 if kind == "sd15" else 1024,
            "scaling_factor": 0.18215 if kind == "sd15" else 0.13025,
        }
    )
    if kind == "flux":
        return _flux(width, tokenizer, text_layers, groups)
    if kind == "sd15":
        text_encoder = CLIPTextModel(_text_config(CLIP_L, width, tokenizer, text_layers))
        unet = UNet2DConditionModel(
            **{
                **SD15_UNET,
                "block_out_channels": _scaled(SD15_UNET["block_out_channels"], width, groups),
                "norm_num_groups": groups,
                "cross_attention_dim": text_encoder.config.hidden_size,
            }
        )
        scheduler = PNDMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
        )
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    text_encoder = CLIPTextModel(_text_config(CLIP_L, width, tokenizer, text_layers))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(CLIP_BIGG, width, tokenizer, text_layers))
    channels = _scaled(SDXL_UNET["block_out_channels"], width, groups)
    context = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    unet = UNet2DConditionModel(
        **{
            **SDXL_UNET,
            "block_out_channels": channels,
            "norm_num_groups": groups,
            "cross_attention_dim": context,
            "attention_head_dim": tuple(max(1, c // 64) for c in channels),  # SDXL: 64 channels per head
            "addition_time_embed_dim": max(8, int(256 * width)),
            # pooled text (the second encoder's projection) + 6 time ids, each embedded to addition_time_embed_dim
            "projection_class_embeddings_input_dim": text_encoder_2.config.projection_dim
            + 6 * max(8, int(256 * width)),
        }
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def _flux(width: float, tokenizer, text_layers: int | None, groups: int):
    """FLUX.1-dev's structure: a 16-channel VAE without quant convs, CLIP-L for the pooled embedding, T5 for the
    sequence, the MMDiT transformer (double and single blocks, rotary axes summing to the head size), flow matching."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    vae = AutoencoderKL(
        **{
            **VAE,
            "block_out_channels": _scaled(VAE["block_out_channels"], width, groups),
            "norm_num_groups": groups,
            "latent_channels": 16,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            "scaling_factor": 0.3611,
            "shift_factor": 0.1159,
            "sample_size": 1024,
        }
    )
    text_encoder = CLIPTextModel(_text_config(CLIP_L, width, tokenizer, text_layers))
    heads = max(1, int(round(FLUX_TRANSFORMER["num_attention_heads"] * width)))
    head_dim = FLUX_TRANSFORMER["attention_head_dim"] if width == 1 else 16
    axes = FLUX_TRANSFORMER["axes_dims_rope"] if width == 1 else (4, 6, 6)  # rotary axes sum to the head size
    t5_model = int(T5_XXL["d_model"] * width)
    # an offline T5 tokenizer: the toy vocabulary as a unigram model with T5's special tokens
    words = ["<pad>", "</s>", "<unk>", *sorted(w.removesuffix("</w>") for w in tokenizer.get_vocab() if w.isalpha())]
    vocab = [(w, 0.0) for w in dict.fromkeys(words)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer_2 = T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(vocab),
            d_model=t5_model,
            d_kv=T5_XXL["d_kv"],
            d_ff=int(T5_XXL["d_ff"] * width),
            num_layers=text_layers or T5_XXL["num_layers"],
            num_heads=max(1, t5_model // T5_XXL["d_kv"]),
            feed_forward_proj=T5_XXL["feed_forward_proj"],
            relative_attention_num_buckets=32,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    transformer = FluxTransformer2DModel(
        **{
            **FLUX_TRANSFORMER,
            "num_attention_heads": heads,
            "attention_head_dim": head_dim,
            "axes_dims_rope": axes,
            "num_layers": FLUX_TRANSFORMER["num_layers"] if width == 1 else 2,
            "num_single_layers": FLUX_TRANSFORMER["num_single_layers"] if width == 1 else 2,
            "joint_attention_dim": t5_model,
            "pooled_projection_dim": text_encoder.config.hidden_size,
        }
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def n_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def kohya_lora_state_dict(
    unet, rank: int = 4, alpha: float = 2.0, seed: int = 0, std: float = 0.02, sdxl_names: bool = False
) -> dict:
    """A kohya/A1111-format LoCon for ``unet`` with random matrices: every linear layer and convolution (attention,
    projections, feed-forward, ResNet convolutions, time embedding, down- and upsamplers) gets
    ``lora_unet_<module>.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``; convolutions get a ``k x k`` down
    and a ``1 x 1`` up matrix (LoCon). ``sdxl_names``: sd-scripts' names for SDXL (the original model's
    ``input_blocks / middle_block / output_blocks`` numbering) instead of diffusers' module paths."""
    import torch
    import torch.nn as nn

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in unet.named_modules():
        if isinstance(module, nn.Linear):
            down_shape, up_shape = (rank, module.in_features), (module.out_features, rank)
        elif isinstance(module, nn.Conv2d) and name not in ("conv_in", "conv_out"):
            down_shape = (rank, module.in_channels, *module.kernel_size)
            up_shape = (module.out_channels, rank, 1, 1)
        else:
            continue
        key = "lora_unet_" + (sgm_name(name, unet.config) if sdxl_names else name).replace(".", "_")
        out[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=generator) * std
        out[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=generator) * std
        out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out


def sgm_name(module: str, config) -> str:
    """sd-scripts' (the original SDXL code's) name of a diffusers UNet module path, e.g.
    ``down_blocks.1.attentions.0.proj_in`` -> ``input_blocks.4.1.proj_in``: input block ``1 + 3 d + i`` holds down
    block ``d``'s resnet and attention ``i`` (sub-modules 0 and 1), input block ``3 (d + 1)`` its downsampler; the
    middle block is resnet 0, attention 1, resnet 2; output block ``3 u + i`` holds up block ``u``'s resnet and
    attention ``i``, its last one the upsampler as sub-module 2 (1 without attentions). (diffusers'
    ``_maybe_map_sgm_blocks_to_diffusers`` is the inverse.)"""
    parts = module.split(".")
    layers = config.layers_per_block
    if parts[0] == "down_blocks":
        d, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.d.downsamplers.0.conv -> input_blocks.3(d+1).0.op
            rest = "" if parts[4:] == ["conv"] else "." + ".".join(parts[4:])
            return f"input_blocks.{(layers + 1) * (d + 1)}.0.op" + rest
        i = int(parts[3])
        block = 1 + (layers + 1) * d + i
        return f"input_blocks.{block}.{0 if kind == 'resnets' else 1}." + _sgm_resnet(parts[4:], kind)
    if parts[0] == "mid_block":
        kind, i = parts[1], int(parts[2])
        sub = 1 if kind == "attentions" else 2 * i
        return f"middle_block.{sub}." + _sgm_resnet(parts[3:], kind)
    if parts[0] == "up_blocks":
        u, kind = int(parts[1]), parts[2]
        has_attention = "CrossAttn" in config.up_block_types[u]
        if kind == "upsamplers":  # in the block's last output block
            block = (layers + 1) * u + layers
            return f"output_blocks.{block}.{2 if has_attention else 1}." + ".".join(parts[4:])
        i = int(parts[3])
        block = (layers + 1) * u + i  # up blocks have layers_per_block + 1 resnets
        return f"output_blocks.{block}.{0 if kind == 'resnets' else 1}." + _sgm_resnet(parts[4:], kind)
    if parts[0] == "time_embedding":
        return f"time_embed.{0 if parts[1] == 'linear_1' else 2}"
    if parts[0] == "add_embedding":
        return f"label_emb.0.{0 if parts[1] == 'linear_1' else 2}"
    return module


_SGM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _sgm_resnet(rest: list[str], kind: str) -> str:
    if kind != "resnets":
        return ".".join(rest)
    return ".".join([_SGM_RESNET.get(rest[0], rest[0]), *rest[1:]])


def build_clip(folder, width: float = 1.0, text_layers: int | None = None, seed: int = 0):
    """A CLIP ViT-L/14 with random weights, saved in ``folder`` as a transformers ``CLIPModel`` folder that ``--clip``
    reads (the toy world's tokenizer, the published image preprocessing: shortest edge 224, centre crop, CLIP's
    mean and std). ``width`` scales the hidden sizes as in :func:`build_pipeline`. For speed and plumbing only."""

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    if not 0 < width <= 1:
        raise ConfigError(f"width must be in (0, 1], got {width}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(folder, seed=seed)
    text = _text_config(CLIP_L, width, tokenizer, text_layers)
    heads = max(1, int(round(VIT_L_14["num_attention_heads"] * width)))
    hidden = heads * VIT_L_14["hidden_size"] // VIT_L_14["num_attention_heads"]
    vision = CLIPVisionConfig(
        **{
            **VIT_L_14,
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": VIT_L_14["num_hidden_layers"] if width == 1 else 2,
        }
    )
    projection = text.projection_dim
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection)
    CLIPModel(config).save_pretrained(folder)
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 224},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "do_convert_rgb": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=1) + "\n")
    # the text window of CLIP's text tower (77 tokens), not the toy world's 40
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    window = text.max_position_embeddings
    tokenizer_config.update(model_max_length=window, max_length=window)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1) + "\n")
    return folder
