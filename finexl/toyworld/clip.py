"""The toy CLIP: a ``transformers.CLIPModel`` with a small custom config, trained contrastively on the toy world.

Its text tower doubles as the text encoder of the toy text-to-image pipeline, as CLIP's does in Stable Diffusion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from finexl.config import Config, setting
from finexl.errors import InputError, MissingInputError
from finexl.records import read_train_record, train_record, write_train_record
from finexl.toyworld.aspects import CATEGORICAL, CATEGORICAL_BY_NAME, sample_aspects
from finexl.toyworld.captions import caption, is_true_of, prompt_for
from finexl.toyworld.dataset import item_seed, render_set
from finexl.toyworld.render import render
from finexl.utils import (
    TrainingClock,
    atomic_dir,
    data_dir,
    images_to_tensor,
    seed_everything,
)

logger = logging.getLogger(__name__)


@dataclass
class ToyClipConfig(Config):
    image_size: int = setting(32, help="input resolution")
    patch_size: int = setting(4, help="ViT patch size")
    hidden_size: int = setting(96, help="width of both towers")
    num_layers: int = setting(4, help="transformer layers per tower")
    num_heads: int = setting(4, help="attention heads")
    projection_dim: int = setting(96, help="joint embedding size")
    max_length: int = setting(40, help="text context length")


@dataclass
class ToyClipTrainConfig(Config):
    model: ToyClipConfig = setting(default_factory=ToyClipConfig, help="the architecture")
    n_images: int = setting(30000, help="rendered training images")
    steps: int = setting(4000, help="optimizer steps")
    max_minutes: float = setting(1e9, help="the schedule anneals to whichever ends first: steps or minutes")
    batch_size: int = setting(128, help="images per step")
    lr: float = setting(1e-3, help="learning rate")
    weight_decay: float = setting(0.1, help="AdamW weight decay")
    warmup: int = setting(200, help="warm-up steps")
    minimal_pairs: bool = setting(
        True,
        help="Batches of minimal pairs (two images that differ in one aspect, captions naming it) with multi-positive"
        " targets from the exact labels; plain InfoNCE over random images when False.",
    )
    hard_batch_fraction: float = setting(
        0.0,
        help="Fraction of steps whose batch shares colour, background and pattern (rendered on the fly, captions "
        "silent on them), so that only shape, pose, position, fill, size and style tell its images apart.",
    )
    group_batch_fraction: float = setting(
        0.0,
        help="Fraction of steps whose batch is made of groups of images identical but for one aspect (pose or shape, "
        "in turn), each group showing every value of it, with captions that name it: rotation and shape become "
        "the only thing that tells the images of a group apart.",
    )
    init_from: str | None = setting(None, kind=str, help="a toy CLIP folder to continue training")
    seed: int = setting(0, help="random seed")


# Aspects varied between the two images of a minimal pair, with their weights: the ones that colour and
# background do not give away get most of the pairs.
PAIR_ASPECTS = {
    "shape": 3.0,
    "pose": 3.0,
    "position": 3.0,
    "pattern": 2.0,
    "fill": 1.0,
    "colour": 0.5,
    "background": 0.5,
    "size": 1.0,
    "blur": 1.0,
    "grain": 1.0,
    "saturation": 1.0,
    "brightness": 1.0,
}


def build_clip_model(vocab_size: int, cfg: ToyClipConfig, bos_id: int, eos_id: int, pad_id: int):
    """A randomly initialised ``CLIPModel`` of the toy size."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_length,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        projection_dim=cfg.projection_dim,
    )
    vision = dict(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        projection_dim=cfg.projection_dim,
    )
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)
    return CLIPModel(config)


def render_minimal_pairs(n_pairs: int, seed: int, size: int) -> tuple[np.ndarray, list, list[str]]:
    """Pairs of images that differ in exactly one aspect. Returns images (2 n, h, w, 3), aspects, varied aspect."""

    names = list(PAIR_ASPECTS)
    weights = np.array([PAIR_ASPECTS[n] for n in names])
    images = np.empty((2 * n_pairs, size, size, 3), dtype=np.uint8)
    aspects, varied = [], []
    for i in range(n_pairs):
        rng = np.random.default_rng(item_seed(seed, i))
        a = sample_aspects(rng)
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if name in CATEGORICAL_BY_NAME:
            values = [v for v in CATEGORICAL_BY_NAME[name].values if v != getattr(a, name)]
            b = a.replace(**{name: values[int(rng.integers(len(values)))]})
        else:  # one image clearly low, the other clearly high
            a = a.replace(**{name: float(rng.uniform(0.0, 0.3))})
            b = a.replace(**{name: float(rng.uniform(0.7, 1.0))})
        render_seed = int(rng.integers(2**31))
        images[2 * i] = render(a, seed=render_seed, size=size)
        images[2 * i + 1] = render(b, seed=render_seed, size=size)
        aspects += [a, b]
        varied += [name, name]
    return images, aspects, varied


# Every hard batch shares colour and background (the aspects a model learns first and then leans on), and most
# also share one more aspect, drawn in turn, so that each remaining aspect is sometimes the one left to tell the
# images apart.
HARD_BATCH_SHARED = ("colour", "background")
HARD_BATCH_EXTRA = ("pattern", "shape", "pose", "position", "fill", None)


def hard_batch(n: int, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, list, list]:
    """``n`` images sharing colour, background and usually one more aspect, with captions that do not name those.

    Returns pixels (n, 3, size, size), aspects, and ``(text, mentions)`` captions.
    """

    extra = HARD_BATCH_EXTRA[int(rng.integers(len(HARD_BATCH_EXTRA)))]
    shared_names = HARD_BATCH_SHARED + ((extra,) if extra else ())
    shared = sample_aspects(rng)
    fixed = {name: getattr(shared, name) for name in shared_names}
    aspects = [sample_aspects(rng, **fixed) for _ in range(n)]
    images = np.stack([render(a, seed=int(rng.integers(2**31)), size=size) for a in aspects])
    captions = [caption(a, rng, exclude=shared_names) for a in aspects]
    return images_to_tensor(images), aspects, captions


# Aspects that group batches vary: the ones the image tower cannot read off colour, background or position.
GROUP_BATCH_ASPECTS = ("pose", "shape")


def group_batch(n: int, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, list, list]:
    """Groups of images that differ only in one aspect (pose or shape), one image per value, same render noise.

    Captions name that aspect (and a random subset of the rest). Returns pixels, aspects and captions, as
    :func:`hard_batch` does; the batch holds ``n // k * k`` images for an aspect of ``k`` values.
    """

    name = GROUP_BATCH_ASPECTS[int(rng.integers(len(GROUP_BATCH_ASPECTS)))]
    values = CATEGORICAL_BY_NAME[name].values
    aspects, images = [], []
    for _ in range(n // len(values)):
        base = sample_aspects(rng)
        render_seed = int(rng.integers(2**31))
        for value in values:
            a = base.replace(**{name: value})
            aspects.append(a)
            images.append(render(a, seed=render_seed, size=size))
    captions = [caption(a, rng, include=(name,)) for a in aspects]
    return images_to_tensor(np.stack(images)), aspects, captions


def multi_positive_loss(logits_per_text: torch.Tensor, compatible: torch.Tensor) -> torch.Tensor:
    """Contrastive loss whose target spreads over every image a caption is true of, both ways.

    Args:
        logits_per_text: (n_text, n_image) similarity logits.
        compatible: (n_text, n_image) bool, caption i is true of image j (the diagonal always is).
    """
    target = compatible.float()
    t2i = -(target / target.sum(1, keepdim=True) * logits_per_text.log_softmax(dim=1)).sum(1).mean()
    i2t = -(target.T / target.T.sum(1, keepdim=True) * logits_per_text.T.log_softmax(dim=1)).sum(1).mean()
    return (t2i + i2t) / 2


def train_toy_clip(out_dir: str | Path, cfg: ToyClipTrainConfig, tokenizer_dir: str | Path, progress: bool = True):
    """Train the toy CLIP from scratch and save it (model, tokenizer, training config) to ``out_dir``."""
    from transformers import CLIPTokenizer

    seed_everything(cfg.seed)
    continued_from = read_train_record(cfg.init_from)  # before any save: out_dir may be the folder continued
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    if cfg.init_from is not None:
        model, _ = load_toy_clip(cfg.init_from)
        logger.info("continuing from the toy CLIP in %s", cfg.init_from)
    else:
        model = build_clip_model(
            len(tokenizer), cfg.model, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
    logger.info("toy CLIP: %.2f M parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    if cfg.minimal_pairs:
        images, aspects, varied = render_minimal_pairs(
            cfg.n_images // 2, seed=cfg.seed + 50, size=cfg.model.image_size
        )
    else:
        data = render_set(cfg.n_images, seed=cfg.seed, size=cfg.model.image_size, progress=progress)
        images, aspects, varied = data.images, data.aspects, [None] * len(data)
    pixels = images_to_tensor(images)
    rng = np.random.default_rng(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    clock = TrainingClock(cfg.steps, cfg.max_minutes, cfg.warmup, cfg.lr)
    model.train()
    bar = tqdm(range(cfg.steps), desc="toy CLIP", disable=not progress)
    for step in bar:
        clock.set_lr(opt, step)
        draw = rng.random()
        if draw < cfg.group_batch_fraction:
            batch_pixels, batch_aspects, captions = group_batch(cfg.batch_size, rng, cfg.model.image_size)
        elif draw < cfg.group_batch_fraction + cfg.hard_batch_fraction:
            batch_pixels, batch_aspects, captions = hard_batch(cfg.batch_size, rng, cfg.model.image_size)
        else:
            if cfg.minimal_pairs:
                pairs = rng.choice(len(pixels) // 2, size=cfg.batch_size // 2, replace=False)
                idx = np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)
            else:
                idx = rng.choice(len(pixels), size=cfg.batch_size, replace=False)
            batch_pixels, batch_aspects = pixels[idx], [aspects[i] for i in idx]
            # A fresh caption each time an image is drawn: the text side sees many wordings of the same truth. In
            # a minimal pair the caption usually names the one aspect that tells the two images apart.
            captions = [
                caption(aspects[i], rng, include=(varied[i],) if varied[i] and rng.random() < 0.8 else ()) for i in idx
            ]
        texts = [c[0] for c in captions]
        tok = tokenizer(texts, padding=True, truncation=True, max_length=cfg.model.max_length, return_tensors="pt")
        out = model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=batch_pixels)
        if cfg.minimal_pairs or cfg.hard_batch_fraction > 0 or cfg.group_batch_fraction > 0:
            compatible = torch.tensor([[is_true_of(c[1], a) for a in batch_aspects] for c in captions])
            loss = multi_positive_loss(out.logits_per_text, compatible)
        else:
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(out.logits_per_image, labels) + F.cross_entropy(out.logits_per_text, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % 100 == 0:
            logger.info("step %d loss %.4f (%.0f s)", step, loss.item(), clock.elapsed())
        if clock.done(step):
            break
    model.eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_train_record(tmp, train_record(cfg, step + 1, clock.elapsed(), continued_from))
    return model, tokenizer


def load_toy_clip(path: str | Path | None = None):
    """Load the toy CLIP (model in eval mode, tokenizer) from ``path`` (default: the shipped ``data/toy_clip``)."""
    from transformers import CLIPModel, CLIPTokenizer

    path = Path(path) if path is not None else data_dir() / "toy_clip"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise MissingInputError(f"no toy CLIP at {path}: expected config.json and model.safetensors")
    try:
        model = CLIPModel.from_pretrained(path)
    except Exception as err:  # safetensors and transformers raise several types for a damaged file
        raise InputError(f"could not load the toy CLIP weights in {path}: {err}") from err
    return model.eval(), CLIPTokenizer.from_pretrained(path)


@torch.no_grad()
def embed_images(model, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Normalized image embeddings. ``images``: uint8 (n, h, w, 3). Returns (n, d)."""
    outs = []
    for i in range(0, len(images), batch_size):
        feats = model.get_image_features(pixel_values=images_to_tensor(images[i : i + batch_size]))
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        outs.append(F.normalize(feats, dim=-1))
    return torch.cat(outs)


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """Normalized text embeddings. Returns (n, d)."""
    tok = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    feats = model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    return F.normalize(feats, dim=-1)


def zero_shot_accuracy(model, tokenizer, images: np.ndarray, aspects) -> dict[str, float]:
    """Per categorical aspect: accuracy of picking the true value among one canonical prompt per value."""
    image_emb = embed_images(model, images)  # (n, d)
    result = {}
    for aspect in CATEGORICAL:
        text_emb = embed_texts(model, tokenizer, [prompt_for(aspect.name, v) for v in aspect.values])  # (k, d)
        pred = (image_emb @ text_emb.T).argmax(dim=1).numpy()
        truth = np.array([aspect.values.index(getattr(a, aspect.name)) for a in aspects])
        result[aspect.name] = float((pred == truth).mean())
    return result
