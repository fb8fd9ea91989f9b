"""The judge: a supervised CNN that reads every aspect value off a toy-world image.

It is the toy world's ground truth for what a model actually draws (the role human labels play for real models),
so it shares nothing with the toy CLIP. To be robust to the imperfections of generated images it is trained on
clean renders and on the same renders passed through the toy VAE (encode, sample, decode), the last step every
generated image goes through.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from finexl.config import Config, setting
from finexl.errors import InputError, MissingInputError
from finexl.records import read_train_record, train_record, write_train_record
from finexl.toyworld.aspects import CATEGORICAL, GRADED
from finexl.toyworld.dataset import render_set
from finexl.utils import (
    TrainingClock,
    atomic_dir,
    atomic_write_json,
    data_dir,
    images_to_tensor,
    seed_everything,
)

logger = logging.getLogger(__name__)

HEAD_SIZES = tuple(len(a.values) for a in CATEGORICAL)


@dataclass
class JudgeConfig(Config):
    image_size: int = setting(32, help="input resolution")
    width: int = setting(32, help="channels of the first stage; doubled at each stage")
    hidden: int = setting(256, help="width of the shared fully connected layer")


class Judge(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4 px), a flattened 4x4 map (keeps position), and one head per aspect."""

    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        w = config.width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(stage(3, w), stage(w, 2 * w), stage(2 * w, 4 * w))
        side = config.image_size // 8
        self.trunk = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * side * side, config.hidden), nn.ReLU(), nn.Dropout(0.1)
        )
        self.categorical = nn.Linear(config.hidden, sum(HEAD_SIZES))
        self.graded = nn.Linear(config.hidden, len(GRADED))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x: (B, 3, H, W) in [-1, 1]. Returns per-aspect logits [(B, k_a)] and graded levels (B, n_graded)."""
        h = self.trunk(self.features(x))  # (B, hidden)
        logits = list(torch.split(self.categorical(h), HEAD_SIZES, dim=1))
        return logits, torch.sigmoid(self.graded(h))


@dataclass
class JudgeTrainConfig(Config):
    model: JudgeConfig = setting(default_factory=JudgeConfig, help="the architecture")
    n_images: int = setting(60000, help="rendered training images")
    steps: int = setting(20000, help="optimizer steps")
    max_minutes: float = setting(
        1e9,
        help="wall-clock limit; the schedule anneals to whichever ends first: steps or minutes",
    )
    batch_size: int = setting(128, help="images per step")
    lr: float = setting(2e-3, help="learning rate")
    warmup: int = setting(200, help="warm-up steps")
    graded_weight: float = setting(10.0, help="weight of the graded aspects' loss against the categorical ones")
    vae_fraction: float = setting(
        0.5,
        help="fraction of training images passed through the VAE first, so the judge reads generated images as it "
        "reads renders",
    )
    init_from: str | None = setting(None, kind=str, help="a judge folder to continue training")
    seed: int = setting(0, help="random seed")


@torch.no_grad()
def vae_roundtrip(vae, images: np.ndarray, seed: int = 0, batch_size: int = 500) -> np.ndarray:
    """Encode, sample and decode uint8 images (n, h, w, 3) through a diffusers VAE; uint8 out."""
    gen = torch.Generator().manual_seed(seed)
    out = np.empty_like(images)
    for i in range(0, len(images), batch_size):
        x = images_to_tensor(images[i : i + batch_size])
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        y = vae.decode(z).sample.clamp(-1, 1)
        out[i : i + batch_size] = ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return out


def train_judge(out_dir: str | Path, cfg: JudgeTrainConfig, vae_dir: str | Path | None, progress: bool = True):
    """Train the judge and save it (``config.json``, ``model.safetensors``) to ``out_dir``."""
    from safetensors.torch import save_file

    seed_everything(cfg.seed)
    continued_from = read_train_record(cfg.init_from)  # before any save: out_dir may be the folder continued
    model = load_judge(cfg.init_from).train() if cfg.init_from is not None else Judge(cfg.model)
    logger.info("judge: %.2f M parameters", sum(p.numel() for p in model.parameters()) / 1e6)
    data = render_set(cfg.n_images, seed=cfg.seed + 300, size=cfg.model.image_size, progress=progress)
    clean = images_to_tensor(data.images)
    if vae_dir is not None and cfg.vae_fraction > 0:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir).eval()
        rough = images_to_tensor(vae_roundtrip(vae, data.images, seed=cfg.seed))
    else:
        rough = clean
    cat_labels = torch.from_numpy(data.categorical_labels())  # (n, n_cat)
    levels = torch.from_numpy(data.graded_levels())  # (n, n_graded)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    clock = TrainingClock(cfg.steps, cfg.max_minutes, cfg.warmup, cfg.lr)
    model.train()
    bar = tqdm(range(cfg.steps), desc="judge", disable=not progress)
    for step in bar:
        clock.set_lr(opt, step)
        idx = torch.from_numpy(rng.choice(len(clean), size=cfg.batch_size, replace=False))
        use_rough = torch.from_numpy(rng.random(cfg.batch_size) < cfg.vae_fraction)[:, None, None, None]
        x = torch.where(use_rough, rough[idx], clean[idx])
        logits, pred_levels = model(x)
        loss_cat = sum(F.cross_entropy(lg, cat_labels[idx, j]) for j, lg in enumerate(logits)) / len(logits)
        loss_grad = F.mse_loss(pred_levels, levels[idx])
        loss = loss_cat + cfg.graded_weight * loss_grad
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(cat=f"{loss_cat.item():.3f}", graded=f"{loss_grad.item():.4f}")
        if step % 200 == 0:
            logger.info(
                "step %d categorical %.4f graded %.5f (%.0f s)",
                step,
                loss_cat.item(),
                loss_grad.item(),
                clock.elapsed(),
            )
        if clock.done(step):
            break
    model.eval()
    with atomic_dir(out_dir) as tmp:
        save_file(model.state_dict(), tmp / "model.safetensors")
        atomic_write_json(tmp / "config.json", asdict(cfg.model))
        write_train_record(tmp, train_record(cfg, step + 1, clock.elapsed(), continued_from))
    return model


def load_judge(path: str | Path | None = None) -> Judge:
    """Load the judge (eval mode) from ``path`` (default: the shipped ``data/toy_judge``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else data_dir() / "toy_judge"
    config_file, weights_file = path / "config.json", path / "model.safetensors"
    for f in (config_file, weights_file):
        if not f.is_file():
            raise MissingInputError(f"judge file {f} is missing")
    try:
        config = JudgeConfig(**json.loads(config_file.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise InputError(f"judge config {config_file} is not a valid JudgeConfig: {err}") from err
    model = Judge(config)
    try:
        state = load_file(weights_file)
    except (SafetensorError, OSError) as err:
        raise InputError(f"judge weights {weights_file} are corrupt or unreadable: {err}") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"judge weights {weights_file} do not match its config: {err}") from err
    return model.eval()


@dataclass
class JudgeReading:
    """What the judge reads on a set of images."""

    categorical: dict[str, list[str]]  # aspect -> value per image
    probabilities: dict[str, np.ndarray]  # aspect -> (n, k) softmax
    graded: dict[str, np.ndarray]  # aspect -> (n,) level

    def value_frequencies(self, aspect: str) -> dict[str, float]:
        values = next(a.values for a in CATEGORICAL if a.name == aspect)
        read = self.categorical[aspect]
        return {v: read.count(v) / len(read) for v in values}


@torch.no_grad()
def read_images(judge: Judge, images: np.ndarray, batch_size: int = 512) -> JudgeReading:
    """Read every aspect off uint8 images (n, h, w, 3)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (n, h, w, 3), got shape {images.shape}")
    probs: list[list[torch.Tensor]] = [[] for _ in CATEGORICAL]
    levels = []
    for i in range(0, len(images), batch_size):
        logits, lv = judge(images_to_tensor(images[i : i + batch_size]))
        for j, lg in enumerate(logits):
            probs[j].append(lg.softmax(dim=1))
        levels.append(lv)
    level_arr = torch.cat(levels).numpy()
    categorical, probabilities = {}, {}
    for j, aspect in enumerate(CATEGORICAL):
        p = torch.cat(probs[j]).numpy()
        probabilities[aspect.name] = p
        categorical[aspect.name] = [aspect.values[k] for k in p.argmax(axis=1)]
    graded = {a.name: level_arr[:, j] for j, a in enumerate(GRADED)}
    return JudgeReading(categorical=categorical, probabilities=probabilities, graded=graded)


def judge_accuracy(judge: Judge, images: np.ndarray, aspects) -> dict[str, float]:
    """Accuracy per categorical aspect and mean absolute error per graded aspect (keys ``mae_<aspect>``)."""
    reading = read_images(judge, images)
    result = {}
    for aspect in CATEGORICAL:
        truth = np.array([getattr(a, aspect.name) for a in aspects])
        result[aspect.name] = float((np.array(reading.categorical[aspect.name]) == truth).mean())
    for aspect in GRADED:
        truth = np.array([getattr(a, aspect.name) for a in aspects])
        result[f"mae_{aspect.name}"] = float(np.abs(reading.graded[aspect.name] - truth).mean())
    return result
