"""The toy world's measured ground truth: what the judge reads on a model's outputs versus its base's.

Both models are sampled on the same neutral prompts (which name no aspect) with the same seeds, so they start
from the same noise; the judge reads every aspect off both sets. For a categorical aspect the change is the
difference in value frequencies (and their total variation distance); for a graded aspect, the difference in mean
level.

The judge has noise of its own: two sets of the base's images with other seeds read differently too. With the base's
images on other seeds (``null_images``, as explain's null test draws them), every aspect gets the judge's null: the
95 % quantile of its change under random swaps of the two images of a null pair (:mod:`finexl.stats`), and is
``moved`` only when its change clears it. The change of a categorical aspect is read as its largest value-frequency
change (``most_increased``'s), of a graded aspect as the absolute change in mean level.
"""

from __future__ import annotations

import numpy as np

from finexl.presets import get_preset
from finexl.sampling import SamplerConfig
from finexl.stats import null_threshold, sign_flips
from finexl.toyworld.aspects import CATEGORICAL, GRADED

GRADED_NAMES = {a.name for a in GRADED}


def measure(
    lora: str | None = None,
    model: str | None = None,
    *,
    scale: float = 1.0,
    base: str | None = None,
    judge: str | None = None,
    n: int = 256,
    seed: int = 0,
    sampler: SamplerConfig | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """What the judge reads on a personalized model's outputs against its base's (``finexl toyworld measure``).

    Both are sampled through the explain pipeline (toy preset: its neutral prompts cycled, seeds ``seed ..
    seed + n - 1``, the image cache), so the images are the very ones an explanation with the same settings uses.
    """
    from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline, Personalization
    from finexl.toyworld.judge import load_judge

    cfg = ExplainConfig(
        preset="toy",
        base=base,
        samples=n,
        seed=seed,
        null=True,
        sampler=sampler or SamplerConfig(),
        cache_dir=cache_dir,
        device=device,
    )
    pipeline = ExplainPipeline(cfg, progress=progress)
    reader = load_judge(judge or get_preset("toy").judge)
    images = pipeline.sample(Personalization(lora=lora, model=model, scale=scale))
    result = compare_readings(reader, images.base, images.tuned, images.null)
    result["settings"] = {
        "lora": lora,
        "model": model,
        "base": str(pipeline.base_dir),
        "scale": scale,
        "n": n,
        "seed": seed,
        "steps": cfg.sampler.num_inference_steps,
        "guidance_scale": cfg.sampler.guidance_scale,
    }
    return result


JUDGE_NULL_QUANTILE = 0.95  # the benchmark's confidence for "the judge reads this aspect moving"
JUDGE_NULL_SWAPS = 1000


def _moves(reading, aspect: str) -> np.ndarray:
    """Per image: a categorical aspect's value as a one-hot row, a graded aspect's level as a column."""
    categorical = next((a for a in CATEGORICAL if a.name == aspect), None)
    if categorical is None:
        return np.asarray(reading.graded[aspect], dtype=float)[:, None]
    read = reading.categorical[aspect]
    return np.array([[float(r == v) for v in categorical.values] for r in read])


def _size(change: np.ndarray, graded: bool) -> np.ndarray:
    """How far a mean change moved: the largest value-frequency gain (categorical), or |mean level change|."""
    return np.abs(change[..., 0]) if graded else change.max(axis=-1)


def judge_null(
    base, null, aspect: str, quantile: float = JUDGE_NULL_QUANTILE, n_swaps: int = JUDGE_NULL_SWAPS, seed: int = 0
) -> float:
    """The judge's null threshold of ``aspect``: the ``quantile`` of its change between the base's images and the
    base's images on other seeds, under random swaps of the two images of each pair."""
    d = _moves(null, aspect) - _moves(base, aspect)  # (n, k)
    flips = sign_flips(np.random.default_rng(seed), n_swaps, len(d))  # (m, n)
    means = np.einsum("mn,nk->mk", flips, d) / len(d)
    return float(null_threshold(_size(means, aspect in GRADED_NAMES), quantile))


def compare_readings(
    judge, base_images: np.ndarray, tuned_images: np.ndarray, null_images: np.ndarray | None = None
) -> dict:
    """Per aspect: what the judge reads on each image set, the difference (tuned minus base) and, with the base's
    images on other seeds (``null_images``), the judge's null threshold and whether the change clears it."""
    from finexl.toyworld.judge import read_images

    base, tuned = read_images(judge, base_images), read_images(judge, tuned_images)
    null = read_images(judge, null_images) if null_images is not None else None
    categorical = {}
    for aspect in CATEGORICAL:
        fb, ft = base.value_frequencies(aspect.name), tuned.value_frequencies(aspect.name)
        diff = {v: ft[v] - fb[v] for v in aspect.values}
        top = max(diff, key=diff.get)
        categorical[aspect.name] = {
            "base": fb,
            "tuned": ft,
            "difference": diff,
            "total_variation": 0.5 * sum(abs(d) for d in diff.values()),
            "most_increased": top,
        }
    graded = {}
    for aspect in GRADED:
        mb, mt = float(base.graded[aspect.name].mean()), float(tuned.graded[aspect.name].mean())
        graded[aspect.name] = {"base": mb, "tuned": mt, "difference": mt - mb}
    if null is not None:
        for name, r in [*categorical.items(), *graded.items()]:
            change = r["difference"][r["most_increased"]] if "most_increased" in r else abs(r["difference"])
            r["null_threshold"] = judge_null(base, null, name)
            r["moved"] = bool(change > r["null_threshold"])
    return {
        "n": int(len(base_images)),
        "categorical": categorical,
        "graded": graded,
        "null_quantile": JUDGE_NULL_QUANTILE if null is not None else None,
    }


def format_measurement(result: dict) -> str:
    """A readable table of ``compare_readings``'s result."""
    lines = [f"judge readings on {result['n']} neutral-prompt images per model (same prompts and seeds)", ""]
    with_null = result.get("null_quantile") is not None
    null_head = f" {'null':>6}  moved" if with_null else ""
    lines.append(f"{'aspect':<12} {'value':<12} {'base':>6} {'tuned':>6} {'change':>7}{null_head}")

    def null_cells(r: dict) -> str:
        return f" {r['null_threshold']:6.3f}  {'yes' if r['moved'] else '-'}" if with_null else ""

    for name, r in result["categorical"].items():
        top = r["most_increased"]
        lines.append(
            f"{name:<12} {top:<12} {r['base'][top]:6.3f} {r['tuned'][top]:6.3f} {r['difference'][top]:+7.3f}"
            f"{null_cells(r)}   (total variation {r['total_variation']:.3f})"
        )
    for name, r in result["graded"].items():
        lines.append(
            f"{name:<12} {'mean level':<12} {r['base']:6.3f} {r['tuned']:6.3f} {r['difference']:+7.3f}{null_cells(r)}"
        )
    if with_null:
        lines.append("")
        lines.append(
            f"null: the {result['null_quantile']:.0%} quantile of the judge's change between the base's images and "
            "the base's on other seeds (pairs randomly swapped); moved: the change clears it"
        )
    return "\n".join(lines)
