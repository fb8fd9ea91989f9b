"""Fine-tuning a Stable Diffusion-family pipeline: LoRA (peft) or the full UNet, with DreamBooth's prior loss.

One loop serves ``finexl train lora`` and ``finexl train dreambooth``. It follows diffusers' training scripts:

1. freeze the pipeline; add a peft ``LoraConfig`` to the UNet attention (and optionally the text encoder), or train
   the whole UNet; trainable parameters stay float32 while frozen ones may run in fp16/bf16;
2. encode the images to latents once (and the prompts, when the text encoder is frozen);
3. each step: noise a batch at random timesteps, predict with the UNet, mean-squared error against the
   scheduler's target (noise or velocity); with class images, add ``prior_loss_weight`` times the same loss on
   them (prior preservation);
4. optimizer step after ``gradient_accumulation_steps`` micro-batches, learning-rate schedule from
   ``diffusers.optimization.get_scheduler``;
5. every N steps: a checkpoint (exact resume), a LoRA snapshot, validation images.

The result is saved as diffusers saves it: ``pytorch_lora_weights.safetensors`` with the adapter config (rank,
alpha) as metadata, or a full pipeline folder; ``finexl_train_config.json`` beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from finexl.config import Config, setting
from finexl.errors import ConfigError, InputError, NumericalError
from finexl.loading import LORA_WEIGHTS_NAME, denoiser
from finexl.records import TRAIN_RECORD, write_train_record
from finexl.sampling import SamplerConfig, sample_images
from finexl.train.checkpoint import (
    CheckpointError,
    check_same_run,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from finexl.train.data import DataError, ImageSet
from finexl.utils import (
    atomic_dir,
    encode_prompts,
    give_default_mode,
    give_default_modes,
    images_to_tensor,
    seed_everything,
    writing,
)

logger = logging.getLogger(__name__)

METHODS = ("lora", "full")
PRECISIONS = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Flux: the guidance a guidance-distilled transformer (FLUX.1-dev) is conditioned on in training: the value
# FluxPipeline samples at by default
FLUX_TRAIN_GUIDANCE = 3.5
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
# Settings that only decide what is written along the way; a run may be resumed with other values of these.
OUTPUT_SETTINGS = (
    "validation_prompts",
    "validation_steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "snapshot_steps",
)


DEFAULT_TARGET_MODULES = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
)


def comma_list(text: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")`` (an argparse type)."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def step_list(text: str) -> tuple[int, ...]:
    """``"50,100,200"`` -> ``(50, 100, 200)`` (an argparse type)."""
    try:
        steps = tuple(int(s) for s in comma_list(text))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected positive step counts like 50,100,200, got {text!r}")
    return steps


@dataclass
class TrainConfig(Config):
    """Settings of one personalization run (saved as ``finexl_train_config.json`` beside the result)."""

    method: str = setting("lora", choices=METHODS, cli=False, help="'lora' (peft adapters) or 'full' (the whole UNet)")
    rank: int = setting(4, minimum=1, help="LoRA rank r")
    alpha: float | None = setting(
        None, kind=float, above=0, help="LoRA alpha; the update is scaled by alpha / rank", default_text="the rank"
    )
    # Attention, the transformer blocks' projections and feed-forward, and the ResNet convolutions (kohya's
    # "LoCon" set); why not attention alone: docs/notes/2026-12-02-module-comments.md.
    target_modules: tuple[str, ...] = setting(
        DEFAULT_TARGET_MODULES,
        parse=comma_list,
        metavar="NAMES",
        help="comma-separated UNet module names that get a LoRA (diffusers' scripts use to_q,to_k,to_v,to_out.0)",
        default_text="attention, transformer projections and feed-forward, ResNet convolutions",
    )
    train_text_encoder: bool = setting(False, help="also put a LoRA on the text encoder (both of SDXL's; not Flux)")
    text_encoder_target_modules: tuple[str, ...] = setting(
        ("q_proj", "k_proj", "v_proj", "out_proj"),
        parse=comma_list,
        metavar="NAMES",
        help="comma-separated text-encoder module names that get a LoRA",
        default_text="its attention projections",
    )
    lr: float = setting(5e-3, above=0, help="learning rate (for the toy model; 1e-4 is usual for SD-size models)")
    lr_scheduler: str = setting("cosine", choices=LR_SCHEDULERS, help="learning-rate schedule")
    lr_warmup_steps: int = setting(20, minimum=0, help="warm-up steps")
    weight_decay: float = setting(1e-2, minimum=0, help="AdamW weight decay")
    max_grad_norm: float = setting(1.0, above=0, help="gradient clipping norm")
    batch_size: int = setting(16, minimum=1, help="images per micro-batch")
    gradient_accumulation_steps: int = setting(1, minimum=1, help="micro-batches per optimizer step")
    max_steps: int = setting(
        800, minimum=1, help="optimizer steps (with --snapshots and no --max-steps: the last snapshot)"
    )
    # diffusers' --proportion_empty_prompts: trains the unconditional branch too, so guidance carries the change
    caption_dropout: float = setting(
        0.2,
        minimum=0,
        below=1,
        help="fraction of captions replaced by the empty prompt, so classifier-free guidance carries the change",
    )
    seed: int = setting(0, minimum=0, help="random seed")
    resolution: int | None = setting(
        None,
        kind=int,
        minimum=8,
        help="train at this size; images are centre-cropped and resized to it",
        default_text="the pipeline's native size",
    )
    mixed_precision: str = setting("no", choices=tuple(PRECISIONS), help="dtype of the frozen weights")
    gradient_checkpointing: bool = setting(False, help="trade compute for memory")
    # DreamBooth: one prompt for every instance image, and the prior-preservation loss on class images
    instance_prompt: str | None = setting(None, cli=False, help="DreamBooth: the prompt of every instance image")
    class_prompt: str | None = setting(None, cli=False, help="DreamBooth: the prompt of the class images")
    prior_loss_weight: float = setting(1.0, minimum=0, help="DreamBooth: weight of the prior-preservation loss")
    # Written along the way
    validation_prompts: tuple[str, ...] = setting(
        (),
        flag="--validation-prompt",
        repeat=True,
        metavar="PROMPT",
        help="prompt rendered for validation (repeatable)",
    )
    validation_steps: int = setting(100, minimum=1, help="render the validation prompts every N steps")
    checkpointing_steps: int = setting(0, minimum=0, help="save a checkpoint every N steps (0: none)")
    checkpoints_total_limit: int | None = setting(
        None, kind=int, minimum=1, help="keep only the newest N checkpoints", default_text="all"
    )
    snapshot_steps: tuple[int, ...] = setting(
        (),
        flag="--snapshots",
        parse=step_list,
        metavar="STEPS",
        help="keep LoRA snapshots at these steps, e.g. 50,100,200,400",
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # every field's own range and choices
        self.target_modules = tuple(self.target_modules)
        self.text_encoder_target_modules = tuple(self.text_encoder_target_modules)
        self.validation_prompts = tuple(self.validation_prompts)
        self.snapshot_steps = tuple(sorted(set(int(s) for s in self.snapshot_steps)))
        if self.alpha is None:
            self.alpha = float(self.rank)
        if self.method == "full" and self.train_text_encoder:
            raise ConfigError("train_text_encoder is for LoRA; a full fine-tune trains the UNet (or transformer) only")
        if any(s < 1 or s > self.max_steps for s in self.snapshot_steps):
            raise ConfigError(f"snapshot steps must lie in [1, max_steps={self.max_steps}], got {self.snapshot_steps}")
        if self.snapshot_steps and self.method != "lora":
            raise ConfigError("snapshots are LoRA snapshots; a full fine-tune keeps checkpoints instead")
        if self.validation_prompts and any(not p.strip() for p in self.validation_prompts):
            raise ConfigError("validation prompts must not be empty")

    def trajectory(self) -> dict:
        """The settings that decide the trained weights (what must match to resume)."""
        return {k: v for k, v in asdict(self).items() if k not in OUTPUT_SETTINGS}


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    loss: float  # mean loss over the last 20 steps
    train_seconds: float  # time in the training loop, saves and validation excluded
    step_seconds: list[float]  # wall time of each optimizer step of this process
    resumed_from: int  # 0 for a fresh run


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict: the noise, or the velocity for v-prediction schedulers."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise InputError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")


def is_flow_matching(pipe) -> bool:
    return getattr(pipe, "unet", None) is None and getattr(pipe, "transformer", None) is not None


def native_resolution(pipe) -> int:
    if is_flow_matching(pipe):
        return int(pipe.default_sample_size) * int(pipe.vae_scale_factor)
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


# Flux: the T5 tokens a training prompt is encoded to (short captions; the pipeline samples with up to 512)
FLUX_MAX_SEQUENCE_LENGTH = 77


def encode_conditioning(pipe, prompts: list[str], resolution: int) -> tuple[torch.Tensor, dict | None]:
    """Denoiser conditioning for ``prompts``: text hidden states, and SDXL's pooled embeddings and size ids, or
    Flux's T5 states and pooled CLIP embedding.

    Gradients flow when enabled (a text encoder with a LoRA); wrap in ``torch.no_grad()`` otherwise.
    """
    if is_flow_matching(pipe):  # Flux: T5 hidden states and the pooled CLIP embedding
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=pipe.transformer.device, max_sequence_length=FLUX_MAX_SEQUENCE_LENGTH
        )
        return embeds, {"pooled_projections": pooled}
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: two text encoders, pooled text, size ids
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, device=pipe.unet.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=embeds.dtype)
        return embeds, {"text_embeds": pooled, "time_ids": time_ids.repeat(len(prompts), 1).to(embeds.device)}
    return encode_prompts(pipe.text_encoder, pipe.tokenizer, prompts), None


def _index(cond: dict | None, idx) -> dict | None:
    return None if cond is None else {k: v[idx] for k, v in cond.items()}


def data_fingerprint(images: np.ndarray, captions: list[str]) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    for c in captions:
        digest.update(c.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


class TrainingRun:
    """The state of one training run: model parts, data, optimizer and random streams."""

    def __init__(self, pipe, data: ImageSet, cfg: TrainConfig, class_data: ImageSet | None, device: torch.device):
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig, inject_adapter_in_model

        self.pipe, self.cfg, self.device = pipe, cfg, device
        self.weight_dtype = PRECISIONS[cfg.mixed_precision]
        self.resolution = cfg.resolution or native_resolution(pipe)
        if self.resolution % int(pipe.vae_scale_factor) != 0:
            raise ConfigError(
                f"resolution {self.resolution} is not a multiple of the VAE factor {pipe.vae_scale_factor}"
            )
        self.captions = self._captions(data, cfg.instance_prompt, "instance")
        self.class_captions = self._captions(class_data, cfg.class_prompt, "class") if class_data else None
        for part in (data, class_data):
            if part is not None and part.images.shape[1:3] != (self.resolution, self.resolution):
                raise DataError(
                    f"training images are {part.images.shape[2]}x{part.images.shape[1]} but the pipeline makes "
                    f"{self.resolution}x{self.resolution} images; pass --resolution {part.images.shape[1]} to train "
                    f"at their size, or resize them"
                )

        # 1. What is trained: the UNet (or Flux's transformer), and with train_text_encoder every text encoder
        unet, vae = denoiser(pipe), pipe.vae
        self.flow = is_flow_matching(pipe)
        text_encoders = [m for m in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]
        for module in (unet, vae, *text_encoders):
            module.requires_grad_(False)
            module.to(device)
        self.lora_config = self.te_lora_config = None
        if cfg.method == "lora":
            if self.weight_dtype != torch.float32:  # frozen parts in the low precision (a full fine-tune saves
                for module in (unet, vae, *text_encoders):  # them, so there they stay as loaded)
                    module.to(dtype=self.weight_dtype)
            self.lora_config = LoraConfig(
                r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian", target_modules=list(cfg.target_modules)
            )
            unet.add_adapter(self.lora_config)
        else:
            unet.requires_grad_(True)  # master weights float32; mixed precision by autocast
        self.trained_encoders = []
        if cfg.train_text_encoder:
            if self.flow:
                raise ConfigError(
                    "train_text_encoder: a Flux LoRA trains the transformer only (its T5 encoder is "
                    "4.7 B parameters); drop --train-text-encoder"
                )
            self.trained_encoders = [n for n in ("text_encoder", "text_encoder_2") if getattr(pipe, n, None)]
            self.te_lora_config = LoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                init_lora_weights="gaussian",
                target_modules=list(cfg.text_encoder_target_modules),
            )
            # peft directly, not transformers' add_adapter: transformers 5.24 asks for peft >= 0.22 there, while the
            # same injection works on every peft this project supports
            for name in self.trained_encoders:
                inject_adapter_in_model(self.te_lora_config, getattr(pipe, name))
        self.part = "transformer" if self.flow else "unet"  # the denoiser's component name
        self.params = {f"{self.part}.{n}": p for n, p in unet.named_parameters() if p.requires_grad}
        for name in self.trained_encoders:
            self.params.update(
                {f"{name}.{n}": p for n, p in getattr(pipe, name).named_parameters() if p.requires_grad}
            )
        for p in self.params.values():  # trainable parameters stay float32 whatever the frozen weights are in
            p.data = p.data.float()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for name in self.trained_encoders:
                getattr(pipe, name).gradient_checkpointing_enable()
        logger.info("%s: %d trainable parameters", cfg.method, sum(p.numel() for p in self.params.values()))

        # 2. Latents (and prompt embeddings) once
        self.latents = self._encode_images(data.images)
        self.class_latents = self._encode_images(class_data.images) if class_data else None
        self.cond = self.class_cond = None
        if not cfg.train_text_encoder:
            with torch.no_grad():
                self.cond = self._encode_unique(self.captions)
                self.class_cond = self._encode_unique(self.class_captions) if class_data else None
                self.empty_cond = encode_conditioning(pipe, [""], self.resolution)
        # the training noise: DDPM's for a UNet; Flux's own flow-matching sigmas (uniform over its training steps)
        scheduler_class = type(pipe.scheduler) if self.flow else DDPMScheduler
        self.scheduler = scheduler_class.from_config(pipe.scheduler.config)

        # 3. Optimizer, schedule, random streams
        # Fused AdamW: one kernel over all (float32) trainable tensors instead of a loop over a hundred small ones.
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda")
        )
        self.lr_scheduler = get_scheduler(
            cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.max_steps
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.mixed_precision == "fp16")
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    @staticmethod
    def _captions(data: ImageSet, prompt: str | None, what: str) -> list[str]:
        if prompt is not None:
            if not prompt.strip():
                raise DataError(f"the {what} prompt is empty")
            return [prompt] * len(data)
        if data.captions is None:
            raise DataError(f"the {what} images have no captions and no {what} prompt was given")
        return list(data.captions)

    @torch.no_grad()
    def _encode_images(self, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        vae, out = self.pipe.vae, []
        shift = getattr(vae.config, "shift_factor", None) or 0.0  # Flux's VAE latents are shifted, then scaled
        for i in range(0, len(images), batch_size):
            pixels = images_to_tensor(images[i : i + batch_size]).to(self.device, vae.dtype)
            out.append((vae.encode(pixels).latent_dist.mean.float() - shift) * vae.config.scaling_factor)
        latents = torch.cat(out)
        if not torch.isfinite(latents).all():
            raise DataError("the VAE produced NaN latents for the training images")
        return latents

    def _encode_unique(self, captions: list[str]) -> tuple[torch.Tensor, dict | None]:
        unique = sorted(set(captions))
        embeds, extra = encode_conditioning(self.pipe, unique, self.resolution)
        pos = torch.tensor([unique.index(c) for c in captions])
        embeds = embeds[pos]
        return embeds, _index(extra, pos)

    def _conditioning(self, captions: list[str], cond, idx) -> tuple[torch.Tensor, dict | None]:
        drop = self.rng.random(len(idx)) < self.cfg.caption_dropout if self.cfg.caption_dropout > 0 else None
        if cond is not None and drop is None:
            return cond[0][idx], _index(cond[1], idx)
        texts = ["" if drop is not None and drop[j] else captions[i] for j, i in enumerate(idx.tolist())]
        if cond is None:
            return encode_conditioning(self.pipe, texts, self.resolution)
        embeds, extra = cond[0][idx].clone(), _index(cond[1], idx)
        if drop.any():
            with torch.no_grad():
                empty, empty_extra = self.empty_cond
            embeds[torch.from_numpy(drop)] = empty.to(embeds.dtype)
            if extra is not None:
                for k in extra:
                    extra[k] = extra[k].clone()
                    extra[k][torch.from_numpy(drop)] = empty_extra[k].to(extra[k].dtype)
        return embeds, extra

    def _loss_on(self, latents, captions, cond, n: int) -> torch.Tensor:
        idx = torch.from_numpy(self.rng.choice(len(latents), size=min(n, len(latents)), replace=False))
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=self.gen).to(self.device)
        if self.flow:
            return self._flow_loss(x0, noise, *self._conditioning(captions, cond, idx))
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(idx),), generator=self.gen).to(
            self.device
        )
        embeds, added = self._conditioning(captions, cond, idx)
        noisy = self.scheduler.add_noise(x0, noise, t)
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32):
            kwargs = {"added_cond_kwargs": added} if added is not None else {}
            pred = self.pipe.unet(noisy, t, encoder_hidden_states=embeds, **kwargs).sample
        return F.mse_loss(pred.float(), training_target(self.scheduler, x0, noise, t).float())

    def _flow_loss(self, x0, noise, embeds, added) -> torch.Tensor:
        """Flux's rectified-flow loss: at sigma s the input is ``(1 - s) x0 + s noise`` and the transformer predicts
        the velocity ``noise - x0``, on latents packed into 2x2 patches as the pipeline samples them."""
        pipe, (b, c, h, w) = self.pipe, x0.shape
        index = torch.randint(0, len(self.scheduler.sigmas) - 1, (b,), generator=self.gen)
        sigma = self.scheduler.sigmas[index].to(self.device, x0.dtype).view(b, 1, 1, 1)
        noisy = (1 - sigma) * x0 + sigma * noise
        transformer = pipe.transformer
        guidance = (
            torch.full((b,), FLUX_TRAIN_GUIDANCE, device=self.device) if transformer.config.guidance_embeds else None
        )
        with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32):
            pred = transformer(
                hidden_states=pipe._pack_latents(noisy, b, c, h, w),
                timestep=sigma.view(b),
                guidance=guidance,
                pooled_projections=added["pooled_projections"],
                encoder_hidden_states=embeds,
                txt_ids=torch.zeros(embeds.shape[1], 3, device=self.device, dtype=embeds.dtype),
                img_ids=pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, embeds.dtype),
                return_dict=False,
            )[0]
        return F.mse_loss(pred.float(), pipe._pack_latents(noise - x0, b, c, h, w).float())

    def micro_batch_loss(self, i: int) -> torch.Tensor:
        """The loss of one micro-batch drawn from the data (and the prior loss on the class images)."""
        cfg = self.cfg
        loss = self._loss_on(self.latents, self.captions, self.cond, cfg.batch_size)
        if self.class_latents is not None:
            prior = self._loss_on(self.class_latents, self.class_captions, self.class_cond, cfg.batch_size)
            loss = loss + cfg.prior_loss_weight * prior
        return loss

    def accumulate_gradients(self, micro_batch_loss: Callable[[int], torch.Tensor]) -> float:
        """Backpropagate ``gradient_accumulation_steps`` micro-batch losses, each divided by their number, so that
        the gradients add up to those of their mean: the gradient of one batch that large. Returns the mean loss."""
        k, total = self.cfg.gradient_accumulation_steps, 0.0
        for i in range(k):
            loss = micro_batch_loss(i)
            self.scaler.scale(loss / k).backward()
            total += loss.item() / k
        return total

    def step(self) -> float:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns the mean loss."""
        cfg = self.cfg
        denoiser(self.pipe).train()
        total = self.accumulate_gradients(self.micro_batch_loss)
        if not np.isfinite(total):
            raise NumericalError("the training loss became NaN or infinite; lower the learning rate")
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    # -- state for checkpoints
    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": self.gen.get_state(),
            "numpy_rng": _numpy_state_for_saving(self.rng.bit_generator.state),
        }

    def load_state(self, weights: dict[str, torch.Tensor], state: dict) -> None:
        missing = set(self.params) ^ set(weights)
        if missing:
            raise CheckpointError(f"checkpoint weights do not match this model (e.g. {sorted(missing)[0]})")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(weights[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.gen.set_state(state["torch_rng"])
        self.rng.bit_generator.state = _numpy_state_from_saved(state["numpy_rng"])


def _numpy_state_for_saving(state: dict) -> dict:
    # PCG64 state: 128-bit integers do not fit a tensor; keep them as decimal strings.
    inner = state["state"]
    return {
        "bit_generator": state["bit_generator"],
        "state": str(inner["state"]),
        "inc": str(inner["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _numpy_state_from_saved(saved: dict) -> dict:
    return {
        "bit_generator": saved["bit_generator"],
        "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
        "has_uint32": saved["has_uint32"],
        "uinteger": saved["uinteger"],
    }


def _lora_layers(run: TrainingRun) -> dict:
    """LoRA tensors in peft naming (``unet.<module>.lora_A.weight``), which diffusers loads for every layer type.

    (``diffusers.utils.convert_state_dict_to_diffusers`` renames only attention layers to the older
    ``lora.down``/``lora.up`` naming; a file mixing the two namings loses layers when diffusers reads it back.)
    """
    from peft.utils import get_peft_model_state_dict

    layers = {f"{run.part}_lora_layers": get_peft_model_state_dict(denoiser(run.pipe))}
    meta = {f"{run.part}_lora_adapter_metadata": run.lora_config.to_dict()}
    for name in run.trained_encoders:
        layers[f"{name}_lora_layers"] = get_peft_model_state_dict(getattr(run.pipe, name))
        meta[f"{name}_lora_adapter_metadata"] = run.te_lora_config.to_dict()
    return {**layers, **meta}


def _write_lora(run: TrainingRun, folder: Path) -> None:
    """``pytorch_lora_weights.safetensors`` via the pipeline's ``save_lora_weights`` (rank, alpha in the metadata)."""
    type(run.pipe).save_lora_weights(folder, weight_name=LORA_WEIGHTS_NAME, **_lora_layers(run))


def save_lora(run: TrainingRun, folder: Path, record: dict) -> None:
    """The LoRA and the config, into ``folder`` atomically (a snapshot)."""
    with atomic_dir(folder) as tmp:
        _write_lora(run, tmp)
        write_train_record(tmp, record)


def _publish(tmp: Path, out_dir: Path, names: list[str]) -> None:
    """Move finished files from ``tmp`` into ``out_dir`` one rename each, the config file last."""
    for name in sorted(names, key=lambda n: (n == "model_index.json", n == TRAIN_RECORD)):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)


def _save_result(run: TrainingRun, out_dir: Path, record: dict) -> None:
    checkpoints = list_checkpoints(out_dir)
    advice = (
        f"; the last checkpoint ({checkpoints[-1][1].name}) is kept: free space and run again with --resume"
        if checkpoints
        else ""
    )
    with writing(out_dir, advice):
        _write_result(run, out_dir, record)


def _write_result(run: TrainingRun, out_dir: Path, record: dict) -> None:
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".result.", suffix=".tmp"))
    give_default_mode(tmp, folder=True)
    try:
        if run.cfg.method == "lora":
            _write_lora(run, tmp)
        else:
            run.pipe.save_pretrained(tmp)
        write_train_record(tmp, record)
        give_default_modes(tmp)  # safetensors writes its files 0600
        _publish(tmp, out_dir, [p.name for p in tmp.iterdir()])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _validate(run: TrainingRun, out_dir: Path, step: int) -> None:

    denoiser(run.pipe).eval()
    prompts = list(run.cfg.validation_prompts)
    sampler = SamplerConfig(height=run.resolution, width=run.resolution, batch_size=max(1, len(prompts)))
    with torch.no_grad():
        images = sample_images(run.pipe, prompts, list(range(len(prompts))), sampler)
    grid = np.concatenate(list(images), axis=1)
    path = out_dir / "validation" / f"step-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(grid).save(tmp, format="PNG")
    os.replace(tmp, path)
    logger.info("validation images for step %d: %s", step, path)


def train(
    pipe,
    data: ImageSet,
    cfg: TrainConfig,
    out_dir: str | Path,
    class_data: ImageSet | None = None,
    resume: bool | str = False,
    base_fingerprint: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``pipe`` on ``data`` (and ``class_data`` for prior preservation) and save the result.

    Args:
        pipe: a diffusers Stable Diffusion-family pipeline; its UNet (and text encoder) are modified in place, so
            afterwards ``pipe`` is the personalized model.
        data: instance images at the pipeline's resolution, with captions unless ``cfg.instance_prompt`` is set.
        cfg: the run's settings.
        out_dir: where the result, checkpoints, snapshots and validation images go.
        class_data: class images for DreamBooth's prior preservation (captioned by ``cfg.class_prompt``).
        resume: ``True``/``"latest"`` or a checkpoint folder to continue from.
        base_fingerprint: identifies the base model; a resume from a checkpoint of another base is refused.
        device: where the modules are trained (moved there); CPU by default.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    if len(data) == 0:
        raise DataError("no training images")
    if data.captions is not None and len(data.captions) != len(data):
        raise DataError(f"got {len(data)} images but {len(data.captions)} captions; need one caption per image")
    if class_data is not None and cfg.class_prompt is None:
        raise ConfigError("class images need a class prompt")
    seed_everything(cfg.seed)
    run = TrainingRun(pipe, data, cfg, class_data, device)
    identity = {  # JSON-normalised, as it is read back from a checkpoint
        **{f"config.{k}": json.loads(json.dumps(v)) for k, v in cfg.trajectory().items()},
        "data": data_fingerprint(data.images, run.captions),
        "class_data": data_fingerprint(class_data.images, run.class_captions) if class_data else None,
        "base": base_fingerprint,
    }

    start = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    if resume:
        path = find_resume_checkpoint(out_dir, resume)
        weights, state, info = load_checkpoint(path)
        check_same_run(info.get("identity", {}), identity, path)
        run.load_state(weights, state)
        start = int(info["step"])
        logger.info("resuming from %s (step %d)", path, start)
        if start >= cfg.max_steps:
            logger.info("checkpoint %s is already at max_steps=%d: saving the result again", path, cfg.max_steps)

    record = {**cfg.to_dict(), "identity": identity}
    losses: list[float] = []
    step_seconds: list[float] = []
    bar = tqdm(
        range(start, cfg.max_steps),
        desc=f"train {cfg.method}",
        disable=not progress,
        initial=start,
        total=cfg.max_steps,
    )
    for step in bar:
        t0 = time.perf_counter()
        loss = run.step()
        step_seconds.append(time.perf_counter() - t0)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{run.lr_scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        if done in cfg.snapshot_steps:
            save_lora(run, out_dir / "snapshots" / f"step-{done:06d}", {**record, "steps_done": done})
        # with checkpointing, the last step is checkpointed too: if the final save fails (a full disk), --resume
        # retries it from there instead of losing the run
        if cfg.checkpointing_steps and (done % cfg.checkpointing_steps == 0 or done == cfg.max_steps):
            weights = {k: p for k, p in run.params.items()}
            with writing(out_dir):
                save_checkpoint(
                    out_dir, done, weights, run.state(), {"identity": identity}, cfg.checkpoints_total_limit
                )
        if cfg.validation_prompts and (done % cfg.validation_steps == 0 or done == cfg.max_steps):
            _validate(run, out_dir, done)
    denoiser(pipe).eval()
    final_loss = float(np.mean(losses[-20:])) if losses else float("nan")
    _save_result(
        run, out_dir, {**record, "steps_done": cfg.max_steps, "final_loss": final_loss, "resumed_from": start}
    )
    logger.info("saved the %s result to %s", cfg.method, out_dir)
    return TrainResult(out_dir, cfg.max_steps, final_loss, float(sum(step_seconds)), step_seconds, start)
