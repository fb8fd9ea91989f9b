"""Where in the image an aspect changed: one (h, w) map per image pair and aspect.

Method: integrated gradients (Sundararajan, Taly and Yan, 2017) of the aspect's projection

    s(x) = < E(x) / ||E(x)||, u >,   u = the aspect's text direction, signed toward the reported change,

along the straight path from the base image to the personalized image of a pair (same prompt, same seed). The map at
a pixel is (tuned - base) times the mean gradient of s along that path, summed over the colour channels. It is
*complete*: the map sums to s(tuned) - s(base), the pair's own move along the aspect, so it divides exactly the
quantity the explanation scores, pixel by pixel, between the places that produced it. Where the two images are equal
the map is zero; where they differ, only the part of the difference that moves the embedding along this aspect counts.
That is what tells two aspects apart in one pair (a red object *and* a striped background): the plain pixel
difference puts both in one map, the aspect's gradient weighs each region by what it does to that aspect.

The measured localization (how much of the map's positive mass falls on the right region of toy-world images whose
object mask is known) is in ``docs/maps.md`` with the command that made it (``scripts/measure_maps.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_STEPS = 16


def aspect_direction(directions, concept: str, direction: str) -> np.ndarray:
    """Unit vector of an aspect's change in CLIP space: the ``axes`` row of its concept (the concept against its
    antonym, or against the mean of its aspect's values), pointing the way the explanation says it moved."""
    design = directions.design("axes")
    phrases = [c.phrase for c in directions.bank.concepts]
    if concept not in phrases:
        raise KeyError(f"concept {concept!r} is not in the bank {directions.bank.name!r}")
    row = design.rows[list(design.concept_index).index(phrases.index(concept))]
    norm = np.linalg.norm(row)
    if norm == 0:
        raise ValueError(f"concept {concept!r} has a zero text direction")
    sign = -1.0 if direction == "decrease" else 1.0
    return sign * row / norm


def change_maps(
    embedder,
    base: np.ndarray,
    tuned: np.ndarray,
    direction: np.ndarray,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 128,
) -> np.ndarray:
    """Integrated-gradient maps of the projection onto ``direction``, one per pair: float32 ``(n, h, w)``; with
    several directions ``(k, d)``, one stack per direction ``(k, n, h, w)``, from one pass of the images.

    ``base`` and ``tuned``: uint8 ``(n, h, w, 3)``. Each map sums (up to the ``steps``-point midpoint rule) to the
    pair's move along its direction; positive where the pixels moved the image toward it.
    """
    if base.shape != tuned.shape or base.ndim != 4:
        raise ValueError(f"expected two image stacks of one shape (n, h, w, 3), got {base.shape} and {tuned.shape}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    single = np.ndim(direction) == 1
    device = getattr(embedder, "device", torch.device("cpu"))
    units = torch.as_tensor(np.atleast_2d(direction), dtype=torch.float32, device=device)  # (k, d)
    alphas = (torch.arange(steps, dtype=torch.float32, device=device) + 0.5) / steps  # midpoints of the path
    per_chunk = max(1, batch_size // steps)
    out = np.zeros((len(units), *base.shape[:3]), dtype=np.float32)
    for start in range(0, len(base), per_chunk):
        b = _to_pixels(base[start : start + per_chunk], device)
        t = _to_pixels(tuned[start : start + per_chunk], device)
        diff = t - b
        path = (b[:, None] + alphas.view(1, -1, 1, 1, 1) * diff[:, None]).flatten(0, 1)
        path.requires_grad_(True)
        with torch.enable_grad():
            s = F.normalize(embedder.pixel_features(path).float(), dim=-1) @ units.T  # (batch, k)
            for j in range(len(units)):  # one forward, a backward per direction
                (grad,) = torch.autograd.grad(s[:, j].sum(), path, retain_graph=j < len(units) - 1)
                grad = grad.view(len(b), steps, *b.shape[1:]).mean(dim=1)
                out[j, start : start + len(b)] = (diff * grad).sum(dim=1).detach().cpu().numpy()
    return out[0] if single else out


def projection_change(embedder, base: np.ndarray, tuned: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """s(tuned) - s(base) per pair, through the same differentiable path (what each map sums to)."""
    device = getattr(embedder, "device", torch.device("cpu"))
    u = torch.as_tensor(direction, dtype=torch.float32, device=device)
    with torch.no_grad():
        s_b = F.normalize(embedder.pixel_features(_to_pixels(base, device)).float(), dim=-1) @ u
        s_t = F.normalize(embedder.pixel_features(_to_pixels(tuned, device)).float(), dim=-1) @ u
    return (s_t - s_b).cpu().numpy()


def pixel_difference_maps(base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
    """The baseline: per-pixel colour distance between the paired images, float32 ``(n, h, w)``."""
    return np.linalg.norm(tuned.astype(np.float32) - base.astype(np.float32), axis=-1) / 255.0


def normalized(maps: np.ndarray) -> np.ndarray:
    """Each map's positive part, scaled to sum to 1 (all zeros where a map has no positive mass)."""
    pos = np.clip(maps, 0.0, None)
    total = pos.reshape(len(pos), -1).sum(axis=1)
    return pos / np.where(total > 0, total, 1.0)[:, None, None]


def mass_on(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Share of each map's positive mass that lies in its region (bool or [0, 1] weights, ``(n, h, w)``)."""
    pos = np.clip(maps, 0.0, None)
    total = pos.reshape(len(pos), -1).sum(axis=1)
    inside = (pos * regions).reshape(len(pos), -1).sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def pairs_to_show(moves: dict[str, np.ndarray], n_pairs: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` pairs: round-robin over the aspects, each aspect's pairs by how far they moved
    along it (largest first), then the first pairs in order to fill up."""
    order = {a: list(np.argsort(-m, kind="stable")) for a, m in moves.items()}
    chosen: list[int] = []
    while len(chosen) < min(limit, n_pairs) and any(order.values()):
        for a in order:
            while order[a]:
                i = int(order[a].pop(0))
                if i not in chosen:
                    chosen.append(i)
                    break
            if len(chosen) >= limit:
                break
    chosen += [i for i in range(n_pairs) if i not in chosen][: max(0, limit - len(chosen))]
    return chosen


def _to_pixels(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
