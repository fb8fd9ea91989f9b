"""Measured quality of the three toy-world models (``finexl toyworld eval``).

* judge: accuracy per categorical aspect and MAE per graded level on held-out renders (clean, and through the VAE);
* toy CLIP: zero-shot accuracy per categorical aspect on held-out renders;
* text-to-image adherence: for prompts that name an aspect value, the fraction of generated images on which the
  judge reads that value (graded aspects: the named band, read as level < 0.5 for "low" words and > 0.5 for "high");
* diversity: with neutral prompts, the entropy of the judge's readings of each categorical aspect relative to the
  maximum (log of the number of values).

Held-out sets use seeds that no training script uses (training scripts use seed + 0..300).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from finexl.config import Config, setting
from finexl.loading import load_pipeline
from finexl.sampling import SamplerConfig, sample_images
from finexl.toyworld.aspects import CATEGORICAL, GRADED, sample_aspects
from finexl.toyworld.captions import NOUNS_WITHOUT_SHAPE, OPENERS, compose
from finexl.toyworld.dataset import render_set

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 10_000
NEUTRAL_PROMPTS = tuple(f"{opener} {noun}" for opener in OPENERS for noun in NOUNS_WITHOUT_SHAPE)


@dataclass
class EvalConfig(Config):
    """What the toy world's evaluation renders and generates."""

    n_held_out: int = setting(2000, minimum=1, help="rendered images for judge and CLIP accuracy")
    n_per_value: int = setting(24, minimum=1, help="generated images per prompted aspect value")
    n_neutral: int = setting(256, minimum=1, help="generated images from neutral prompts")
    sampler: SamplerConfig = setting(default_factory=SamplerConfig, help="how the images are sampled")
    seed: int = setting(HELD_OUT_SEED, minimum=0, cli=False, help="seed of the held-out renders")


def adherence_prompts(aspect: str, value: str, n: int, seed: int) -> list[str]:
    """``n`` prompts that name ``value`` of ``aspect`` (a band for graded aspects) and a random subset of others."""
    rng = np.random.default_rng([seed, hash_text(aspect), hash_text(value)])
    prompts = []
    for _ in range(n):
        other = sample_aspects(rng)
        mentioned: dict[str, str] = {}
        for a in CATEGORICAL:
            if a.name != aspect and rng.random() < 0.3:
                mentioned[a.name] = getattr(other, a.name)
        mentioned[aspect] = value
        prompts.append(compose(mentioned, rng)[0])
    return prompts


def hash_text(text: str) -> int:
    """A stable (not salted per process) small integer for a string, for seeding."""
    return int.from_bytes(text.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**31)


def normalized_entropy(labels: list[str], n_values: int) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(n_values))


def evaluate(
    cfg: EvalConfig | None = None,
    pipeline: str | Path | None = None,
    clip: str | Path | None = None,
    judge: str | Path | None = None,
    grid_dir: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Load the toy world's models (the shipped ones unless paths are given) and measure them; ``pipeline=None``
    skips the measurements that generate images (``"toy"``: the shipped pipeline)."""
    from finexl.toyworld.clip import load_toy_clip
    from finexl.toyworld.judge import load_judge

    reader = load_judge(judge)
    clip_model, tokenizer = load_toy_clip(clip)
    pipe = None if pipeline is None else load_pipeline(None if pipeline == "toy" else pipeline)
    return evaluate_models(pipe, clip_model, tokenizer, reader, cfg or EvalConfig(), grid_dir, progress)


def evaluate_models(
    pipe, clip_model, tokenizer, judge, cfg: EvalConfig, grid_dir: str | Path | None = None, progress: bool = False
) -> dict:
    """Run every measurement. Any model may be ``None`` to skip the measurements that need it."""
    from finexl.toyworld.clip import zero_shot_accuracy
    from finexl.toyworld.judge import judge_accuracy, read_images, vae_roundtrip

    result: dict = {"config": asdict(cfg)}
    held_out = render_set(cfg.n_held_out, seed=cfg.seed)
    # 1. judge on held-out renders
    if judge is not None:
        result["judge"] = judge_accuracy(judge, held_out.images, held_out.aspects)
        if pipe is not None:
            rough = vae_roundtrip(pipe.vae, held_out.images, seed=cfg.seed)
            result["judge_through_vae"] = judge_accuracy(judge, rough, held_out.aspects)
    # 2. toy CLIP zero-shot
    if clip_model is not None:
        result["clip_zero_shot"] = zero_shot_accuracy(clip_model, tokenizer, held_out.images, held_out.aspects)
    if pipe is None or judge is None:
        return result
    # 3. adherence: prompts naming one value each
    adherence: dict[str, float] = {}
    per_value: dict[str, dict[str, float]] = {}
    grids: dict[str, list[np.ndarray]] = {}
    targets = [(a.name, a.values) for a in CATEGORICAL] + [(a.name, ("low", "high")) for a in GRADED]
    for aspect, values in targets:
        hits, per_value[aspect], grids[aspect] = [], {}, []
        for value in values:
            prompts = adherence_prompts(aspect, value, cfg.n_per_value, cfg.seed)
            seeds = [cfg.seed + i for i in range(cfg.n_per_value)]
            images = sample_images(pipe, prompts, seeds, cfg.sampler)
            reading = read_images(judge, images)
            if aspect in {a.name for a in GRADED}:
                levels = reading.graded[aspect]
                ok = levels < 0.5 if value == "low" else levels > 0.5
            else:
                ok = np.array([r == value for r in reading.categorical[aspect]])
            per_value[aspect][value] = float(ok.mean())
            hits.extend(ok.tolist())
            grids[aspect].append(images[:8])
        adherence[aspect] = float(np.mean(hits))
        logger.info("adherence %s: %.3f %s", aspect, adherence[aspect], per_value[aspect])
    result["adherence"] = adherence
    result["adherence_per_value"] = per_value
    # 4. diversity under neutral prompts
    prompts = [NEUTRAL_PROMPTS[i % len(NEUTRAL_PROMPTS)] for i in range(cfg.n_neutral)]
    images = sample_images(pipe, prompts, [cfg.seed + 50_000 + i for i in range(cfg.n_neutral)], cfg.sampler)
    reading = read_images(judge, images)
    result["neutral_entropy"] = {
        a.name: normalized_entropy(reading.categorical[a.name], len(a.values)) for a in CATEGORICAL
    }
    result["neutral_graded_mean"] = {a.name: float(reading.graded[a.name].mean()) for a in GRADED}
    grids["neutral"] = [images[i : i + 8] for i in range(0, min(48, len(images)) - 7, 8)]  # full rows of 8
    if grid_dir is not None:
        write_grids(grids, Path(grid_dir))
    return result


def write_grids(grids: dict[str, list[np.ndarray]], out_dir: Path, scale: int = 2) -> None:
    """One PNG per aspect: a row of samples per prompted value (upscaled ``scale`` x, nearest neighbour)."""

    out_dir.mkdir(parents=True, exist_ok=True)
    for aspect, rows in grids.items():
        if not rows:
            continue
        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
        image = Image.fromarray(grid)
        image = image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
        tmp = out_dir / f".{aspect}.png.tmp"
        image.save(tmp, format="PNG")
        tmp.replace(out_dir / f"{aspect}.png")


def format_table(result: dict) -> str:
    """A plain-text table of the measurements, one row per aspect."""
    cols = [
        ("judge", "judge acc/MAE"),
        ("judge_through_vae", "judge (VAE) acc/MAE"),
        ("clip_zero_shot", "CLIP zero-shot"),
        ("adherence", "T2I adherence"),
        ("neutral_entropy", "neutral H/Hmax"),
    ]
    cols = [(k, title) for k, title in cols if k in result]
    lines = ["| aspect | " + " | ".join(t for _, t in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for aspect in [a.name for a in CATEGORICAL] + [a.name for a in GRADED]:
        cells = []
        for key, _ in cols:
            table = result[key]
            value = table.get(aspect, table.get(f"mae_{aspect}"))
            if value is None:
                cells.append("")
            elif key.startswith("judge") and aspect in {a.name for a in GRADED}:
                cells.append(f"MAE {value:.3f}")
            else:
                cells.append(f"{value:.3f}")
        lines.append(f"| {aspect} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
