"""LoRA fine-tuning of a Stable Diffusion-family UNet with peft (library core; the CLI comes with the trainer issue).

Follows the conventions of diffusers' LoRA training scripts: a peft ``LoraConfig`` on the UNet's attention
projections, only the LoRA parameters trainable (float32), the noise objective of the pipeline's own scheduler,
and weights saved with ``save_lora_weights`` in the diffusers format together with the adapter's config (rank and
alpha), so that ``pipe.load_lora_weights(dir)`` rebuilds exactly the trained model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from finexl.utils import TrainingClock, atomic_dir, atomic_write_json, seed_everything

logger = logging.getLogger(__name__)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
CONFIG_NAME = "finexl_lora_config.json"


@dataclass
class LoraTrainConfig:
    rank: int = field(default=4, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=4.0, metadata={"help": "LoRA alpha; the update is scaled by alpha / r"})
    target_modules: tuple[str, ...] = field(
        default=("to_q", "to_k", "to_v", "to_out.0"), metadata={"help": "UNet modules that get a LoRA"}
    )
    lr: float = 1e-3
    steps: int = 300
    max_minutes: float = 1e9
    batch_size: int = 16
    warmup: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")


def _training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "epsilon":
        return noise
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")


def train_lora(
    pipe, images: np.ndarray, captions: list[str], cfg: LoraTrainConfig, out_dir: str | Path, progress: bool = True
) -> Path:
    """Train a LoRA on ``(images, captions)`` and save it to ``out_dir``.

    Args:
        pipe: a ``StableDiffusionPipeline`` (its UNet gets the adapter; everything else stays frozen).
        images: uint8 ``(n, h, w, 3)`` at the pipeline's resolution.
        captions: one caption per image.
        cfg: training settings, saved beside the weights.
        out_dir: folder for ``pytorch_lora_weights.safetensors`` and ``finexl_lora_config.json``.

    Returns:
        ``out_dir``.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from finexl.toyworld.clip import images_to_tensor
    from finexl.toyworld.diffusion import encode_prompts

    # 1. Check inputs
    if len(images) == 0:
        raise ValueError("no training images")
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; need one caption per image")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape (n, h, w, 3), got {images.dtype} {images.shape}")

    # 2. Frozen model, adapter on the UNet
    seed_everything(cfg.seed)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    lora_config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian", target_modules=list(cfg.target_modules)
    )
    unet.add_adapter(lora_config)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # trainable LoRA parameters stay float32 whatever the frozen weights are in
        p.data = p.data.float()
    logger.info("LoRA: %d trainable parameters", sum(p.numel() for p in params))

    # 3. Data: latents and prompt embeddings once
    with torch.no_grad():
        pixels = images_to_tensor(images).to(vae.dtype)
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # (n, c, h/f, w/f)
        cond = encode_prompts(text_encoder, tokenizer, captions)  # (n, L, d)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    # 4. Training loop
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    clock = TrainingClock(cfg.steps, cfg.max_minutes, cfg.warmup, cfg.lr)
    unet.train()
    bar = tqdm(range(cfg.steps), desc="LoRA", disable=not progress)
    for step in bar:
        clock.set_lr(opt, step)
        idx = rng.choice(len(latents), size=min(cfg.batch_size, len(latents)), replace=False)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=cond[idx]).sample
        loss = F.mse_loss(pred.float(), _training_target(scheduler, x0, noise, t).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if clock.done(step):
            break
    unet.eval()

    # 5. Save in the diffusers LoRA format, with the adapter config (rank, alpha) as metadata
    lora_state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    with atomic_dir(out_dir) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp,
            unet_lora_layers=lora_state,
            weight_name=LORA_WEIGHTS_NAME,
            unet_lora_adapter_metadata=lora_config.to_dict(),
        )
        atomic_write_json(tmp / CONFIG_NAME, {**asdict(cfg), "steps_done": step + 1})
    return Path(out_dir)
