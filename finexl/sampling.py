"""Sampling a diffusers text-to-image pipeline on (prompt, seed) pairs, reproducibly.

Each image gets its own CPU ``torch.Generator`` seeded with its seed, so an image depends only on its prompt, its
seed and the sampler settings, never on how the requests were batched or on which device the model runs. Two
pipelines sampled on the same (prompt, seed) therefore start from the same initial noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from finexl.config import Config, setting
from finexl.errors import BackendError, NumericalError

logger = logging.getLogger(__name__)


# Schedulers a pipeline can be sampled with besides its own ("default"); each is built from the pipeline's own
# scheduler config, so it keeps the model's noise schedule and prediction type.
SCHEDULERS = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


@dataclass
class SamplerConfig(Config):
    """How images are sampled from a pipeline."""

    num_inference_steps: int = setting(25, minimum=1, flag="--steps", help="sampler steps")
    guidance_scale: float = setting(4.0, minimum=0, help="classifier-free guidance")
    height: int = setting(32, minimum=8, cli=False, help="image height in pixels")
    width: int = setting(32, minimum=8, cli=False, help="image width in pixels")
    batch_size: int = setting(64, minimum=1, help="images generated at once (halved on out-of-memory)")
    scheduler: str = setting(
        "default",
        choices=("default", *SCHEDULERS),
        help="sampler: 'default' is the "
        "pipeline's own; dpm++ (DPM-Solver++ 2M) and unipc are multistep solvers for fewer "
        "steps, built from the pipeline's scheduler config",
    )


class BadImagesError(NumericalError, ValueError):
    """A pipeline produced NaN or blank images."""


def _compile_failed(err: RuntimeError) -> bool:
    """A failure of ``torch.compile`` (dynamo or its backend: no C++ compiler, an unsupported operation)."""
    if not type(err).__module__.startswith("torch."):
        return False
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    return isinstance(err, TorchDynamoException | CppCompileError | InvalidCxxCompiler)


def _out_of_memory(err: BaseException) -> bool:
    import torch

    text = str(err).lower()
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the CUDA name
    return isinstance(err, oom) or "out of memory" in text or "can't allocate memory" in text


def sampled_with(own: str, name: str) -> str:
    """The scheduler class a pipeline whose own scheduler is class ``own`` is sampled with under ``name``: the
    multistep solvers replace schedulers of the diffusion (DDPM) family; a flow-matching base (Flux) keeps its own,
    whose sigmas and shift they do not take."""
    if name == "default" or own.startswith("FlowMatch"):
        return own
    return SCHEDULERS[name][0]


def use_scheduler(pipe, name: str):
    """Put scheduler ``name`` (see :data:`SCHEDULERS`) on ``pipe``, built from its own scheduler's config; returns
    the scheduler it replaced (put it back with ``pipe.scheduler = old``), or None when the pipeline keeps its own
    (``"default"``, or a flow-matching base: see :func:`sampled_with`)."""
    import diffusers

    own = type(pipe.scheduler).__name__ if hasattr(pipe, "scheduler") else ""
    if sampled_with(own, name) == own:
        if name != "default":
            logger.info("%s is a flow-matching scheduler: sampling with it instead of %s", own, name)
        return None
    old = pipe.scheduler
    cls_name, overrides = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(old.config, **overrides)
    return old


def sample_images(
    pipe, prompts: list[str], seeds: list[int], config: SamplerConfig | None = None, progress: bool = False
) -> np.ndarray:
    """Generate one image per (prompt, seed).

    Args:
        pipe: a diffusers text-to-image pipeline (``StableDiffusionPipeline`` or compatible).
        prompts: one prompt per image.
        seeds: one seed per image.
        config: sampler settings.
        progress: show a progress bar over batches.

    Returns:
        ``uint8`` array of shape ``(n, height, width, 3)``.
    """

    config = config or SamplerConfig()
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; need one seed per prompt")
    if not prompts:
        raise ValueError("no prompts to sample")
    out = np.empty((len(prompts), config.height, config.width, 3), dtype=np.uint8)
    old_scheduler = use_scheduler(pipe, config.scheduler)
    try:
        _sample_into(out, pipe, prompts, seeds, config, progress)
    finally:
        if old_scheduler is not None:
            pipe.scheduler = old_scheduler
    blank = out.reshape(len(out), -1).std(axis=1) < 1.0
    if blank.all():
        raise BadImagesError("every generated image is blank (a single flat colour); the model is not working")
    return out


def _sample_into(
    out: np.ndarray, pipe, prompts: list[str], seeds: list[int], config: SamplerConfig, progress: bool
) -> None:
    import torch

    batch, start = config.batch_size, 0
    bar = tqdm(total=len(prompts), desc="sample", unit="img", disable=not progress)
    while start < len(prompts):
        batch_prompts = prompts[start : start + batch]
        # each image's noise comes from its own seed, so a batch of any size gives the same images (to rounding)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch]]
        try:
            with torch.no_grad():
                images = pipe(
                    batch_prompts,
                    height=config.height,
                    width=config.width,
                    num_inference_steps=config.num_inference_steps,
                    guidance_scale=config.guidance_scale,
                    generator=generators,
                    output_type="np",
                ).images  # (b, h, w, 3) float in [0, 1]
        except RuntimeError as err:  # torch's OutOfMemoryError is one
            if _compile_failed(err):
                reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
                raise BackendError(
                    f"torch.compile could not compile the denoiser ({reason}); run without --compile"
                ) from err
            if not _out_of_memory(err):
                raise
            if batch == 1:
                raise BackendError(
                    f"out of memory even one image at a time at {config.height}x{config.width}: {err}"
                ) from err
            batch = max(1, min(batch, len(batch_prompts)) // 2)
            logger.warning(
                "out of memory with %d images at once; going on with batches of %d", len(batch_prompts), batch
            )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if not np.isfinite(images).all():
            raise BadImagesError(f"the pipeline produced NaN or infinite pixels for prompts {batch_prompts[:3]}...")
        out[start : start + len(batch_prompts)] = (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)
        start += len(batch_prompts)
        bar.update(len(batch_prompts))
    bar.close()
