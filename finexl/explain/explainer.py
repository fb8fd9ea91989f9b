"""``explain``: base and personalized model in, aspect scores with intervals out (``explanation.json``).

The stages, each a function of its own module: paired sampling (:mod:`.paired`), embedding (:mod:`.embed`),
divergence and text directions (:mod:`.concepts`), decomposition (:mod:`.decompose`), scores, intervals and the
null threshold (:mod:`.scoring`). :func:`decompose_divergence` runs the last three on embeddings alone, so the
benchmark can compare methods on the same images.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from finexl.explain.concepts import ConceptBank, ConceptDirections
from finexl.explain.decompose import DEFAULT_METHOD, make_estimator
from finexl.explain.scoring import aggregate, bootstrap_row_scores, fit_row_scores, null_row_scores, spreads
from finexl.sampling import SamplerConfig

logger = logging.getLogger(__name__)

SCHEMA = "finexl-explanation/1"
NULL_SEED_OFFSET = 1_000_000


class PromptsError(ValueError):
    """A prompts file that cannot be used."""


@dataclass
class ExplainConfig:
    """Settings of one explanation (saved in ``explanation.json``)."""

    base: str | None = field(default=None, metadata={"help": "base pipeline folder; default the toy pipeline"})
    lora: str | None = field(default=None, metadata={"help": "LoRA file or folder"})
    model: str | None = field(default=None, metadata={"help": "fine-tuned pipeline folder (instead of a LoRA)"})
    lora_scale: float = 1.0
    prompts: str | None = field(default=None, metadata={"help": "UTF-8 file, one prompt per line; default toy"})
    # the prompts the concept directions f(C) are built from; default the sampling prompts. For a DreamBooth model
    # sampled on its instance prompt ("a sks dog"), the class prompt ("a dog"): the text encoder has no meaning for
    # the identifier, and "a sks dog, purple" - "a sks dog" need not point where purple does
    direction_prompts: str | None = field(default=None, metadata={"help": "UTF-8 file; default the prompts"})
    samples: int = field(default=128, metadata={"help": "image pairs; prompts are cycled, pair i has seed + i"})
    clip: str | None = field(default=None, metadata={"help": "CLIP spec (see finexl.explain.embed); default toy"})
    concepts: str | None = field(default=None, metadata={"help": "concept bank file or 'toy'/'real'"})
    method: str = DEFAULT_METHOD
    seed: int = 0
    n_bootstrap: int = 200
    n_null: int = 200
    confidence: float = 0.9
    null_quantile: float = 0.95
    null: bool = field(default=True, metadata={"help": "calibrate against the base with other seeds"})
    vlm: str | None = field(default=None, metadata={"help": "local vision-language model folder for proposals"})
    vlm_endpoint: str | None = field(default=None, metadata={"help": "OpenAI-compatible endpoint for proposals"})
    vlm_model: str | None = None
    vlm_pairs: int = 8
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    height: int | None = field(default=None, metadata={"help": "image size; default the base's native size"})
    width: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sampler, dict):
            self.sampler = SamplerConfig(**self.sampler)
        if bool(self.lora) == bool(self.model):
            raise ValueError("give exactly one of a LoRA (lora) and a fine-tuned pipeline (model)")
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (pairs to bootstrap over), got {self.samples}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.n_bootstrap < 10 or self.n_null < 10:
            raise ValueError("n_bootstrap and n_null must be >= 10")


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptsError(f"prompts file {path} is not UTF-8 text: {err}") from err
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise PromptsError(f"prompts file {path} has no prompts (one per line expected)")
    return prompts


def default_prompts() -> list[str]:
    from finexl.toyworld.evaluate import NEUTRAL_PROMPTS

    return list(NEUTRAL_PROMPTS)


def requests(prompts: list[str], n: int, seed: int) -> tuple[list[str], list[int]]:
    return [prompts[i % len(prompts)] for i in range(n)], [seed + i for i in range(n)]


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2
    return np.quantile(samples, tail, axis=0), np.quantile(samples, 1 - tail, axis=0)


def _finite(x) -> float | None:
    """JSON has no NaN: methods without a residual (per-image scorers) report None."""
    return float(x) if np.isfinite(x) else None


def decompose_divergence(
    base: np.ndarray,
    tuned: np.ndarray,
    directions: ConceptDirections,
    method: str = DEFAULT_METHOD,
    null_base: np.ndarray | None = None,
    n_bootstrap: int = 200,
    n_null: int = 200,
    confidence: float = 0.9,
    null_quantile: float = 0.95,
    seed: int = 0,
) -> dict:
    """Scores, intervals and null thresholds from paired embeddings (rows of ``base`` and ``tuned`` are pairs).

    ``null_base``: embeddings of the base on the same prompts with other seeds; without it no aspect is tested.
    Returns the ``aspects`` (those reported as changed first, then the rest, each by score), ``concepts``,
    ``residual`` and ``divergence`` parts of an explanation.
    """
    if base.shape != tuned.shape:
        raise ValueError(f"base and personalized embeddings differ in shape: {base.shape} vs {tuned.shape}")
    bank: ConceptBank = directions.bank
    estimator = make_estimator(method)
    design = directions.design(estimator.design)
    D = tuned - base
    spread = spreads(np.concatenate([base, tuned]), design.rows)
    boot, boot_residual, boot_joint = bootstrap_row_scores(estimator, design, D, spread, n_bootstrap, seed, base)
    point, residual, joint = fit_row_scores(estimator, design, D, spread, base)
    if boot_joint is not None:  # two-part (finexl): the joint fit reports the median over refits (bagging)
        joint, residual = np.median(boot_joint, axis=0), float(np.median(boot_residual))
    agg, agg_boot = aggregate(point, design, bank), aggregate(boot, design, bank)
    a_low, a_high = _interval(agg_boot.aspect, confidence)
    c_low, c_high = _interval(agg_boot.concept, confidence)
    r_low, r_high = _interval(boot_residual, confidence) if np.isfinite(boot_residual).all() else (np.nan, np.nan)
    n_aspects = len(bank.aspects)
    threshold, changed = np.full(n_aspects, np.nan), np.zeros(n_aspects, dtype=bool)
    if null_base is not None:
        null, null_joint = null_row_scores(estimator, design, base, null_base, spread, n_null, seed + 1)
        threshold = np.quantile(aggregate(null, design, bank).aspect, null_quantile, axis=0)
        changed = a_low > threshold
        if joint is not None:  # the joint fit must see the change too
            j_low, _ = _interval(aggregate(boot_joint, design, bank).aspect, confidence)
            changed &= j_low > np.quantile(aggregate(null_joint, design, bank).aspect, null_quantile, axis=0)
    # which concept and direction: the joint fit's where it picked one in the aspect, else the score's own
    agg_joint = aggregate(joint, design, bank) if joint is not None else None
    aspects = []
    for a, name in enumerate(bank.aspects):
        source = agg_joint if agg_joint is not None and agg_joint.aspect[0, a] > 0 else agg
        concept = bank.concepts[source.aspect_concept[0, a]]
        sign = source.aspect_sign[0, a]
        aspects.append({
            "aspect": name,
            "group": bank.group_of(name),
            "score": float(agg.aspect[0, a]),
            "interval": [float(a_low[a]), float(a_high[a])],
            "direction": "increase" if sign > 0 else ("decrease" if sign < 0 else "none"),
            "concept": concept.phrase,
            "toward": concept.phrase if sign >= 0 else (concept.antonym or f"less {concept.phrase}"),
            "threshold": None if np.isnan(threshold[a]) else float(threshold[a]),
            "changed": bool(changed[a]),
            "joint_score": None if agg_joint is None else float(agg_joint.aspect[0, a]),
        })  # fmt: skip
    # the aspects reported as changed first, then the rest, each by score: a concept that only correlates with the
    # change (the joint fit gives it no weight) can outscore it when the images spread less along it
    aspects.sort(key=lambda r: (not r["changed"], -r["score"]))
    concepts = [
        {"phrase": c.phrase, "antonym": c.antonym, "aspect": c.aspect, "score": float(agg.concept[0, i]),
         "interval": [float(c_low[i]), float(c_high[i])]}
        for i, c in enumerate(bank.concepts)
    ]  # fmt: skip
    v = D.mean(axis=0)
    rng = np.random.default_rng(seed + 2)
    boot_norms = [np.linalg.norm(D[rng.integers(0, len(D), len(D))].mean(axis=0)) for _ in range(n_bootstrap)]
    n_low, n_high = _interval(np.asarray(boot_norms), confidence)
    return {
        "aspects": aspects,
        "concepts": concepts,
        "residual": {"value": _finite(residual), "interval": [_finite(r_low), _finite(r_high)]},
        "divergence": {
            "n_pairs": int(len(D)),
            "norm": float(np.linalg.norm(v)),
            "norm_interval": [float(n_low), float(n_high)],
            "mean_pair_distance": float(np.linalg.norm(D, axis=1).mean()),
        },  # fmt: skip
    }


def explain(cfg: ExplainConfig, progress: bool = False) -> dict:
    """Sample, embed, decompose, score; returns the explanation (see ``SCHEMA``)."""
    from finexl.explain.concepts import load_concept_bank, text_directions
    from finexl.explain.embed import load_embedder
    from finexl.explain.paired import ImageCache, cached_samples, default_cache_dir, lora_fingerprint
    from finexl.loading import (
        fingerprint_folder,
        load_lora,
        load_pipeline,
        native_size,
        recorded_base,
        resolve_lora_file,
    )
    from finexl.utils import data_dir

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prompts = read_prompts(cfg.prompts) if cfg.prompts else default_prompts()
    direction_prompts = read_prompts(cfg.direction_prompts) if cfg.direction_prompts else None
    bank = load_concept_bank(cfg.concepts)
    embedder = load_embedder(cfg.clip)
    base_dir = Path(cfg.base) if cfg.base else data_dir() / "toy_sd"
    if not (base_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"no diffusers pipeline at {base_dir}: model_index.json is missing")
    base_fp = fingerprint_folder(base_dir)
    if cfg.lora:
        lora_file = resolve_lora_file(cfg.lora)
        tuned_fp = lora_fingerprint(base_fp, fingerprint_folder(lora_file), cfg.lora_scale)
        trained_on = recorded_base(lora_file)
        if trained_on is not None and trained_on != base_fp:
            logger.warning(
                "the LoRA %s was trained by finexl on another base (fingerprint %s) than %s (%s): the explanation "
                "describes what it does to this base", lora_file, trained_on, base_dir, base_fp,
            )  # fmt: skip
    else:
        tuned_fp = fingerprint_folder(cfg.model)
    size = native_size(base_dir)
    sampler = replace(cfg.sampler, height=cfg.height or size, width=cfg.width or size)
    cache = ImageCache(cfg.cache_dir or default_cache_dir())
    timings["load"] = time.perf_counter() - t0

    pipes: dict[str, object] = {}

    def base_pipe():
        if "base" not in pipes:
            pipe = pipes.pop("tuned", None)
            if pipe is not None and cfg.lora:
                pipe.unload_lora_weights()  # the same pipeline, back to the base weights
            pipes["base"] = pipe if pipe is not None and cfg.lora else load_pipeline(base_dir)
        return pipes["base"]

    def tuned_pipe():
        if "tuned" not in pipes:
            if cfg.lora:
                pipe = pipes.pop("base", None) or load_pipeline(base_dir)
                load_lora(pipe, lora_file, scale=cfg.lora_scale)  # checks every module against the base first
            else:
                pipe = load_pipeline(cfg.model)
            pipes["tuned"] = pipe
        return pipes["tuned"]

    t = time.perf_counter()
    ps, seeds = requests(prompts, cfg.samples, cfg.seed)
    tuned_images = cached_samples(tuned_pipe, tuned_fp, ps, seeds, sampler, cache, "personalized", progress)
    base_images = cached_samples(base_pipe, base_fp, ps, seeds, sampler, cache, "base", progress)
    null_images = None
    if cfg.null:
        null_seeds = [s + NULL_SEED_OFFSET for s in seeds]
        null_images = cached_samples(base_pipe, base_fp, ps, null_seeds, sampler, cache, "base (null)", progress)
    timings["sample"] = time.perf_counter() - t

    proposals, proposal_note = [], None
    if cfg.vlm or cfg.vlm_endpoint:
        from finexl.narrate.llm import LLMError
        from finexl.narrate.vlm import propose_concepts

        t = time.perf_counter()
        try:
            proposals = propose_concepts(make_vlm(cfg, cache.root), base_images, tuned_images, ps, cfg.vlm_pairs)
        except LLMError as err:  # the explanation goes on with the bank as it is
            proposal_note = f"VLM proposals failed ({err}); the concept bank was used as it is"
            logger.warning(proposal_note)
        bank = bank.extended("proposed", [p for p, _ in proposals]) if proposals else bank
        timings["propose"] = time.perf_counter() - t

    t = time.perf_counter()
    base_emb, tuned_emb = embedder.embed_images(base_images), embedder.embed_images(tuned_images)
    null_emb = embedder.embed_images(null_images) if null_images is not None else None
    directions = text_directions(embedder, bank, direction_prompts or ps, cache.root)
    timings["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    result = decompose_divergence(
        base_emb, tuned_emb, directions, cfg.method, null_emb, cfg.n_bootstrap, cfg.n_null, cfg.confidence,
        cfg.null_quantile, cfg.seed,
    )  # fmt: skip
    timings["decompose"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return {
        "schema": SCHEMA,
        "method": cfg.method,
        **result,
        "concept_bank": {
            "name": bank.name,
            "digest": bank.digest(),
            "n_concepts": len(bank.concepts),
            "aspects": bank.aspects,
            "proposed": [{"phrase": p, "pairs": c} for p, c in proposals],
            "proposal_note": proposal_note,
        },  # fmt: skip
        "models": {
            "base": {"path": str(base_dir), "fingerprint": base_fp},
            "personalized": {"lora": cfg.lora, "model": cfg.model, "scale": cfg.lora_scale, "fingerprint": tuned_fp},
            "clip": {"name": embedder.name, "fingerprint": embedder.fingerprint},
        },
        "settings": asdict(cfg),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }


def make_vlm(cfg: ExplainConfig, cache_dir):
    """The vision-language backend an explain config names (local folder or endpoint)."""
    from finexl.narrate.llm import EndpointChat, LocalVisionChat

    if cfg.vlm and cfg.vlm_endpoint:
        raise ValueError("give either a local VLM folder or a VLM endpoint, not both")
    if cfg.vlm_endpoint:
        if not cfg.vlm_model:
            raise ValueError("a VLM endpoint needs a model name (vlm_model / --vlm-model)")
        return EndpointChat(cfg.vlm_endpoint, cfg.vlm_model, cache_dir=cache_dir)
    return LocalVisionChat(cfg.vlm, cache_dir=cache_dir)


def format_explanation(expl: dict, top: int | None = None) -> str:
    """A readable table: one row per aspect, largest score first."""
    conf = expl.get("settings", {}).get("confidence", 0.9)
    joint = any(a.get("joint_score") is not None for a in expl["aspects"])  # two-part methods (finexl)
    lines = [f"{'aspect':<12} {'group':<12} {'score':>6}  {int(conf * 100)}% interval   {'null':>5}  "
             + ("joint  " if joint else "") + f"{'change':<8} toward"]  # fmt: skip
    for row in expl["aspects"][:top]:
        lo, hi = row["interval"]
        thr = "" if row["threshold"] is None else f"{row['threshold']:.3f}"
        change = "CHANGED" if row["changed"] else ("-" if row["threshold"] is not None else "?")
        joint_cell = f"{row['joint_score']:.3f}  " if joint else ""
        lines.append(f"{row['aspect']:<12} {row['group']:<12} {row['score']:6.3f}  [{lo:.3f}, {hi:.3f}]   {thr:>5}  "
                     f"{joint_cell}{change:<8} {row['toward']}")  # fmt: skip
    if joint:
        lines.append("joint: the joint fit's score; an aspect is CHANGED only if that fit needs it too")
    res = expl["residual"]
    lines.append("")
    changed = [a["aspect"] for a in expl["aspects"] if a["changed"]]
    if changed:
        lines.append(f"changed: {', '.join(changed)}")
    elif any(a["threshold"] is not None for a in expl["aspects"]):
        lines.append("no significant change: no aspect's interval lies above what the base reaches against itself")
    low, high = res["interval"]
    n_pairs = expl["divergence"]["n_pairs"]
    if res["value"] is None:
        lines.append(f"({n_pairs} pairs, method {expl['method']}: no residual, it scores concepts one by one)")
    else:
        lines.append(
            f"unexplained part of the divergence: {res['value']:.3f} [{low:.3f}, {high:.3f}]   ({n_pairs} pairs, "
            f"method {expl['method']})"
        )
    return "\n".join(lines)
