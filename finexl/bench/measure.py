"""The toy world's measured ground truth: what the judge reads on a model's outputs versus its base's.

Both models are sampled on the same neutral prompts (which name no aspect) with the same seeds, so they start
from the same noise; the judge reads every aspect off both sets. For a categorical aspect the change is the
difference in value frequencies (and their total variation distance); for a graded aspect, the difference in mean
level.
"""

from __future__ import annotations

import numpy as np

from finexl.presets import get_preset
from finexl.sampling import SamplerConfig
from finexl.toyworld.aspects import CATEGORICAL, GRADED


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
        null=False,
        sampler=sampler or SamplerConfig(),
        cache_dir=cache_dir,
        device=device,
    )
    pipeline = ExplainPipeline(cfg, progress=progress)
    reader = load_judge(judge or get_preset("toy").judge)
    images = pipeline.sample(Personalization(lora=lora, model=model, scale=scale))
    result = compare_readings(reader, images.base, images.tuned)
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
