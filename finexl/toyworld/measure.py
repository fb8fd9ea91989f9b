"""The toy world's measured ground truth: what the judge reads on a model's outputs versus its base's.

Both models are sampled on the same neutral prompts (which name no aspect) with the same seeds, so they start
from the same noise; the judge reads every aspect off both sets. For a categorical aspect the change is the
difference in value frequencies (and their total variation distance); for a graded aspect, the difference in mean
level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from finexl.sampling import SamplerConfig
from finexl.toyworld.aspects import CATEGORICAL, GRADED
from finexl.toyworld.evaluate import NEUTRAL_PROMPTS


@dataclass
class MeasureConfig:
    n: int = field(default=256, metadata={"help": "images per model"})
    seed: int = field(default=0, metadata={"help": "seed of the first image; image i uses seed + i"})
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


def neutral_requests(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` neutral prompts (cycling through the toy world's aspect-free prompts) and their seeds."""
    if n < 1:
        raise ValueError(f"need at least one image to measure, got n={n}")
    prompts = [NEUTRAL_PROMPTS[i % len(NEUTRAL_PROMPTS)] for i in range(n)]
    return prompts, [seed + i for i in range(n)]


def compare_readings(judge, base_images: np.ndarray, tuned_images: np.ndarray) -> dict:
    """Per aspect: what the judge reads on each image set, and the difference (tuned minus base)."""
    from finexl.toyworld.judge import read_images

    base, tuned = read_images(judge, base_images), read_images(judge, tuned_images)
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
    return {"n": int(len(base_images)), "categorical": categorical, "graded": graded}


def format_measurement(result: dict) -> str:
    """A readable table of ``compare_readings``'s result."""
    lines = [f"judge readings on {result['n']} neutral-prompt images per model (same prompts and seeds)", ""]
    lines.append(f"{'aspect':<12} {'value':<12} {'base':>6} {'tuned':>6} {'change':>7}")
    for name, r in result["categorical"].items():
        top = r["most_increased"]
        lines.append(
            f"{name:<12} {top:<12} {r['base'][top]:6.3f} {r['tuned'][top]:6.3f} {r['difference'][top]:+7.3f}"
            f"   (total variation {r['total_variation']:.3f})"
        )
    for name, r in result["graded"].items():
        lines.append(f"{name:<12} {'mean level':<12} {r['base']:6.3f} {r['tuned']:6.3f} {r['difference']:+7.3f}")
    return "\n".join(lines)
