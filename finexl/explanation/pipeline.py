"""The explain pipeline: one base, one CLIP, one concept bank; any number of personalizations explained against them.

:class:`ExplainPipeline` runs the stages of ``DESIGN.md`` in order (its ``__call__`` numbers them). Every check
that can be made before an image is generated is made when the pipeline is built or at stage 1, with one policy
for ``finexl explain``, the benchmark and ``finexl toyworld measure``, which all go through it. Base images, null
images, their embeddings and the text directions are made once per pipeline and reused for every model it explains.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from finexl.chat import LLMError, make_chat, redact_url
from finexl.config import Config, setting
from finexl.errors import ConfigError, InputError, MissingInputError
from finexl.explanation.concepts import compose, load_concept_bank, text_directions
from finexl.explanation.decompose import DEFAULT_METHOD, ESTIMATORS
from finexl.explanation.embed import load_embedder, parse_clip_spec
from finexl.explanation.maps import aspect_direction, change_maps, normalized, pairs_to_show
from finexl.explanation.paired import ImageCache, cached_samples, lora_fingerprint
from finexl.explanation.proposals import propose_concepts
from finexl.explanation.result import AspectScore, Explanation, Samples
from finexl.explanation.scoring import Decomposed, decompose_divergence
from finexl.explanation.sequential import VERDICT_RULES, Look, rounds, unsettled
from finexl.loading import DTYPES, check_device, fingerprint_folder, fuse_lora, load_lora, load_pipeline, native_size
from finexl.loading.inspection import (
    FAMILY_NAMES,
    STOP_WORDS,
    dreambooth_of,
    identifier_of,
    inspect,
    trigger_from,
)
from finexl.loading.lora_formats import LoraError, resolve_lora_file
from finexl.loading.pipelines import read_model_index
from finexl.presets import PRESETS, get_preset, resolve_preset
from finexl.records import recorded_base
from finexl.sampling import SamplerConfig, sampled_with
from finexl.stats import bootstrap_sample, percentile_interval
from finexl.utils import default_cache_dir, read_text
from finexl.validation import load_json
from finexl.version import __version__

logger = logging.getLogger(__name__)

NULL_SEED_OFFSET = 1_000_000
# How explanations are sampled unless told otherwise: UniPC at 10 steps gave the same verdicts as the base's own
# scheduler at 25 steps on the benchmark's quick and single suites (docs/speed.md). The benchmark, the toy world's
# judge readings and training previews keep SamplerConfig()'s 25 steps of the pipeline's own scheduler.
EXPLAIN_SAMPLER = SamplerConfig(num_inference_steps=10, scheduler="unipc")


class PromptsError(ConfigError):
    """A prompts file or list that cannot be used."""


class OtherBaseError(InputError):
    """A LoRA that finexl recorded as trained on another base than the one it is explained on."""

    def __init__(self, message: str, trained_on: str):
        super().__init__(message)
        self.trained_on = trained_on


def parse_scales(text: str) -> list[float]:
    """``--scales 0.25,0.5,1`` (an argparse type): numbers; their range is checked with the config."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def parse_samples(text: str) -> int | str:
    """``--samples``: ``auto`` or a number of pairs >= 2."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 2, got {text!r}")
    return value


@dataclass
class ExplainConfig(Config):
    """Settings of an explain pipeline (saved in every ``explanation.json`` it writes, and read back from it by
    :meth:`from_json`).

    Parts left ``None`` come from the preset: ``toy`` when no base is given. A base of your own has no preset
    unless one is asked for, so ``clip``, ``concepts`` and ``prompts`` must then be given.
    """

    preset: str | None = setting(
        None,
        choices=PRESETS,
        help="take unset parts from a preset",
        default_text="toy without --base",
    )
    base: str | None = setting(
        None,
        help="base diffusers pipeline folder",
        default_text="the toy preset's, data/toy_sd",
    )
    clip: str | None = setting(None, help="CLIP: a transformers CLIP folder, open_clip:MODEL:CHECKPOINT, or 'toy'")
    concepts: str | None = setting(None, help="concept bank JSON file, or 'toy' / 'real' for the shipped banks")
    prompts: str | list[str] | None = setting(
        None,
        help="UTF-8 file, one prompt per line (or a list, from Python)",
        default_text="the preset's neutral prompts",
    )
    direction_prompts: str | list[str] | None = setting(
        None,
        help="prompts file to build the concept directions from. For a DreamBooth model sampled on its instance "
        "prompt ('a sks dog'), give the class prompt ('a dog'): the text encoder has no meaning for the "
        "identifier",
        default_text="--prompts",
    )
    samples: int | str = setting(
        "auto",
        parse=parse_samples,
        help="'auto' or a number of image pairs, pair i with seed --seed + i and the prompts cycled. 'auto' draws "
        "rounds of --auto-round pairs and stops when every verdict and the order of the CHANGED aspects is "
        "settled: each has at most --auto-error chance of differing from --auto-cap fixed pairs' (see --auto-"
        "verdicts), and the false-positive rate stays within 1 / (1 - error) of theirs (docs/speed.md)",
    )
    auto_round: int = setting(32, minimum=2, help="--samples auto: pairs per round")
    auto_cap: int = setting(128, minimum=2, help="--samples auto: the most pairs (the fixed rule it stands in for)")
    auto_error: float = setting(
        0.05,
        above=0,
        below=0.5,
        help="--samples auto: accepted chance that a verdict differs from --auto-cap pairs'",
    )
    auto_verdicts: str = setting(
        "each",
        choices=VERDICT_RULES,
        help="--samples auto: 'each' holds every unchanged verdict to --auto-error chance of differing from --auto-"
        "cap pairs'; 'share' only their expected share: 0.43 of the pairs instead of 0.70 on the benchmark, but "
        "it missed the strongest change of 18 of 68 models (docs/speed.md)",
    )
    method: str = setting(
        DEFAULT_METHOD,
        choices=tuple(ESTIMATORS),
        help="decomposition (see finexl/explanation/decompose.py)",
    )
    concepts_from_tags: int = setting(
        0,
        minimum=0,
        metavar="N",
        help="add the LoRA file's N most frequent training tags (kohya's ss_tag_frequency, common words left out) to "
        "the concept bank as their own aspect, 'tags' (a tag the bank holds already stays in its aspect): the "
        "explanation says which trained tags the outputs moved toward; 0: none",
    )
    trigger: str | None = setting(
        None,
        metavar="WORD|auto|none",
        help="explain the LoRA twice from the same base images: its prompts with this trigger word ('WORD, "
        "prompt'; a DreamBooth model's class prompt becomes its instance prompt) and without it, the leak. 'auto': "
        "the file's trigger phrase (modelspec.trigger_phrase), else a DreamBooth model's identifier, else its most "
        "frequent training tag that is not a common word (finexl inspect shows them); 'none': no trigger",
        default_text="a DreamBooth model's identifier (finexl's training record, or kohya's training and "
        "regularization folders), explained on its class prompt unless --prompts is given; none for other LoRAs",
    )
    interaction: bool = setting(
        False,
        help="with a stack (--lora A --lora B): also explain each LoRA alone on the same base images and say per "
        "aspect whether the stack's effect is their sum (additive), more (strengthened), less (weakened), or "
        "CHANGED where no LoRA alone changes it (new)",
    )
    scales: list[float] | None = setting(
        None,
        parse=parse_scales,
        metavar="S1,S2,...",
        help="a weight sweep, e.g. 0.25,0.5,0.75,1: the LoRA explained at each scale on the same base and null "
        "images; each aspect's score per scale, its onset (the smallest scale at which it is CHANGED) and whether "
        "it grows steadily, in the explanation, the report and the index. The explanation is the one at the "
        "largest scale",
    )
    seed: int = setting(0, minimum=0, help="seed of the first pair; pair i uses seed + i")
    n_bootstrap: int = setting(200, minimum=10, flag="--bootstrap", help="bootstrap resamples of the pairs")
    n_null: int = setting(200, minimum=10, help="random swaps of the null pairs")
    confidence: float = setting(0.9, minimum=0.5, below=1, help="level of the intervals")
    null_quantile: float = setting(0.95, minimum=0.5, below=1, help="quantile of the null an interval must clear")
    null: bool = setting(True, help="skip the null calibration (no CHANGED verdicts)")
    allow_other_base: bool = setting(False, help="explain a LoRA that finexl recorded as trained on another base")
    report_pairs: int = setting(
        16,
        minimum=0,
        help="pairs kept for the report, with where-it-changed maps; 0 keeps none",
    )
    map_pairs: int = setting(64, minimum=1, help="pairs the mean change map of an aspect averages")
    map_steps: int = setting(16, minimum=1, help="integration steps of a change map")
    vlm: str | None = setting(None, help="local transformers vision-language model folder for concept proposals")
    vlm_endpoint: str | None = setting(
        None,
        help="OpenAI-compatible API base URL with image input, e.g. http://localhost:8000/v1",
    )
    vlm_model: str | None = setting(None, help="model name at --vlm-endpoint")
    vlm_pairs: int = setting(8, minimum=1, help="image pairs shown to the VLM")
    api_key_env: str | None = setting(
        None,
        cli=False,
        help="environment variable holding the endpoints' API key (never stored; the command line's --llm-api-key-"
        "env)",
    )
    sampler: SamplerConfig = setting(
        default_factory=lambda: replace(EXPLAIN_SAMPLER),
        help="how the images are sampled",
    )
    height: int | None = setting(None, minimum=8, kind=int, help="image height", default_text="the base's native size")
    width: int | None = setting(None, minimum=8, kind=int, help="image width", default_text="the base's native size")
    cache_dir: str | None = setting(
        None,
        flag="--cache",
        help="image and direction cache folder",
        default_text="$FINEXL_CACHE or ~/.cache/finexl",
    )
    device: str = setting("cpu", help="torch device of every model, e.g. cuda or cuda:1")
    dtype: str = setting(
        "float32",
        choices=DTYPES,
        help="dtype of the diffusion pipelines (float16/bfloat16 on a GPU)",
    )
    compile: bool = setting(
        False,
        help="torch.compile the denoiser: the first batch waits for the compile (most of a minute on a CPU, seconds "
        "once torch's compile cache holds it), later batches sample faster. Meant for long runs on a GPU: on 2 "
        "CPU cores it made explain and explain-many slower (docs/speed.md). On a CPU it needs a C++ compiler",
    )

    @property
    def n_pairs(self) -> int:
        """The pairs the run draws at most (``auto_cap`` with ``samples='auto'``)."""
        return self.auto_cap if self.samples == "auto" else self.samples

    def __post_init__(self) -> None:
        super().__post_init__()  # every field's own range and choices
        if self.samples != "auto" and not (isinstance(self.samples, int) and self.samples >= 2):
            raise ConfigError(
                f"samples must be 'auto' or a number >= 2 (pairs to bootstrap over), got {self.samples!r}"
            )
        if self.auto_round > self.auto_cap:
            raise ConfigError(f"auto_round must be in [2, auto_cap]; got {self.auto_round} and {self.auto_cap}")
        if self.samples == "auto" and not self.null:
            raise ConfigError(
                "samples='auto' settles CHANGED verdicts, which need the null test; drop --no-null or "
                "give a number of samples"
            )
        if self.vlm and self.vlm_endpoint:
            raise ConfigError("give either a local VLM folder or a VLM endpoint, not both")
        if self.vlm_endpoint and not self.vlm_model:
            raise ConfigError("a VLM endpoint needs a model name (vlm_model / --vlm-model)")
        if self.scales is not None:
            self.scales = check_scales(self.scales)
            if self.vlm or self.vlm_endpoint:
                raise ConfigError("a weight sweep (scales) takes no VLM concept proposals")
        if isinstance(self.prompts, (list, tuple)):
            self.prompts = check_prompts(self.prompts, "prompts")
        if isinstance(self.direction_prompts, (list, tuple)):
            self.direction_prompts = check_prompts(self.direction_prompts, "direction prompts")

    @classmethod
    def from_json(cls, path: str | Path) -> ExplainConfig:
        """The config of a run, read from its ``explanation.json`` (or a folder holding one; see
        :meth:`from_explanation`) or from a config file written by :meth:`to_json`."""
        path = Path(path)
        if path.is_dir():
            path = path / "explanation.json"
        obj = load_json(path, "config file")
        if isinstance(obj, dict) and "settings" in obj and "aspects" in obj:
            return cls.from_explanation(Explanation.from_dict(obj, str(path)))
        return cls.from_dict(obj, source=str(path))

    @classmethod
    def from_explanation(cls, explanation: Explanation) -> ExplainConfig:
        """The config an explanation was made with, its parts as they were resolved (the preset's name, the
        sampler's image size): ``ExplainPipeline(config)(**explanation.target)`` makes it again. An endpoint URL
        comes back as it was saved, without credentials."""
        settings = dict(explanation.settings)
        for key in RECORDED_WITH_SETTINGS:
            settings.pop(key, None)
        if isinstance(settings.get("sampler"), dict):
            settings["sampler"] = {k: v for k, v in settings["sampler"].items() if k != "scheduler_class"}
        return cls.from_dict(settings, source="the settings of the explanation")


# what an explanation's ``settings`` hold beside the config's fields: the target and the collection entry
RECORDED_WITH_SETTINGS = ("lora", "model", "lora_scale", "collection")


@dataclass(frozen=True)
class Personalization:
    """What is explained: a LoRA on the base at ``scale``, or a fine-tuned pipeline folder (``model``)."""

    lora: str | None = None
    model: str | None = None
    scale: float = 1.0
    others: tuple[tuple[str, float], ...] = ()  # a stack: more LoRAs fused with ``lora``, each at its scale
    trigger: str | None = None  # a trigger word the personalized model's prompts get (the base's do not)
    instance: tuple[str, str] | None = None  # a DreamBooth model's (class prompt, instance prompt)

    def __post_init__(self) -> None:
        if bool(self.lora) == bool(self.model):
            raise ConfigError("give exactly one of a LoRA (lora) and a fine-tuned pipeline (model)")
        for _, scale in ((self.lora, self.scale), *self.others):
            if not math.isfinite(scale):
                raise ConfigError(f"LoRA scale must be a finite number, got {scale}")
        if self.others and self.model:
            raise ConfigError("a stack is of LoRAs on the base, not of a fine-tuned pipeline")

    def tuned_prompt(self, prompt: str) -> str:
        """The personalized model's prompt for a base prompt: with the trigger (a DreamBooth model's class prompt
        becomes its instance prompt; any other prompt gets ``TRIGGER, `` in front), or the prompt itself."""
        if self.trigger is None:
            return prompt
        if self.instance is not None and prompt == self.instance[0]:
            return self.instance[1]
        return f"{self.trigger}, {prompt}"

    @property
    def loras(self) -> list[tuple[str, float]]:
        """Every LoRA with its scale: one, or the stack's."""
        return [(self.lora, self.scale), *self.others] if self.lora else []

    @classmethod
    def of(cls, lora=None, model=None, scale=1.0) -> Personalization:
        """From the call's arguments: ``lora`` a path or a list of paths (a stack), ``scale`` a number or one per
        LoRA."""
        if not isinstance(lora, (list, tuple)):
            if isinstance(scale, (list, tuple)):
                raise ConfigError("one LoRA takes one scale")
            return cls(lora=lora, model=model, scale=float(scale))
        scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * len(lora)
        if len(scales) != len(lora):
            raise ConfigError(f"a stack of {len(lora)} LoRAs takes one scale or one per LoRA, got {len(scales)}")
        if not lora:
            raise ConfigError("no LoRA given")
        others = tuple((str(p), float(s)) for p, s in zip(lora[1:], scales[1:], strict=True))
        return cls(lora=str(lora[0]), model=model, scale=float(scales[0]), others=others)


@dataclass
class PairedImages:
    """Images of both models on the same prompts and seeds; ``null``: the base again with other seeds."""

    prompts: list[str]
    seeds: list[int]
    base: np.ndarray  # (n, h, w, 3) uint8
    tuned: np.ndarray  # (n, h, w, 3) uint8
    null: np.ndarray | None = None  # (n, h, w, 3) uint8


@dataclass
class PairedEmbeddings:
    base: np.ndarray  # (n, d)
    tuned: np.ndarray  # (n, d)
    null: np.ndarray | None = None  # (n, d)


CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def check_prompts(prompts, what: str = "prompts") -> list[str]:
    """Non-empty strings without control characters (a NUL byte, say), stripped."""
    out = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if len(out) != len(prompts):
        raise PromptsError(f"{what} must be non-empty strings; got {len(prompts) - len(out)} empty or not text")
    if not out:
        raise PromptsError(f"no {what} given")
    for i, p in enumerate(out):
        if CONTROL_CHARACTERS.search(p):
            raise PromptsError(f"{what}: prompt {i + 1} holds a control character (a NUL byte?): {p[:40]!r}")
    return out


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    text = read_text(path, "prompts file", PromptsError)
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise PromptsError(f"prompts file {path} has no prompts (one per line expected)")
    return check_prompts(prompts, f"prompts file {path}")


def requests(prompts: list[str], n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` (prompt, seed) requests: the prompts cycled, seeds ``seed .. seed + n - 1``."""
    return [prompts[i % len(prompts)] for i in range(n)], [seed + i for i in range(n)]


def _prompt_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, list) else read_prompts(value)


@dataclass(frozen=True)
class Checked:
    """Stage 1's result: the personalization's weights file (None for a pipeline folder), its fingerprint (of the
    LoRA on this base at its scale), and the base finexl recorded it as trained on (None if not recorded)."""

    lora_file: str | None
    fingerprint: str
    trained_on: str | None
    stack: tuple[tuple[str, float], ...] = ()  # a stack's LoRA files and scales, the first one's included


class Timings:
    """Wall seconds per stage: ``with timings("sample"): ...`` adds the block's time to the stage's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t

    def rounded(self) -> dict[str, float]:
        """Every stage's seconds and the ``total`` since the timings began, to 0.01 s."""
        return {
            **{k: round(v, 2) for k, v in self.seconds.items()},
            "total": round(time.perf_counter() - self._start, 2),
        }


@dataclass
class Rounds:
    """What the sampling rounds of stages 2 to 6 end with: the pairs, their embeddings, the decomposition of the
    last round and, with ``samples='auto'``, each look at the verdicts."""

    images: PairedImages
    embeddings: PairedEmbeddings
    decomposed: Decomposed
    looks: list[Look]


class ExplainPipeline:
    """Explain personalizations of one base: ``ExplainPipeline(config)(lora=...)`` returns an :class:`Explanation`.

    Building the pipeline resolves the preset and checks every setting and file that can be checked without a
    model (prompts, concept bank, base folder, CLIP spec); models load on first use, on ``config.device``.
    """

    def __init__(self, config: ExplainConfig | None = None, progress: bool = False):
        self.config = cfg = config or ExplainConfig()
        self.progress = progress
        self._batch_bars = progress  # a bar per batch of images; explaining shows one bar over its rounds instead
        # 0. defaults: the preset fills what is unset; a base of one's own must name its parts
        self.preset = resolve_preset(cfg.preset, cfg.base)
        if self.preset is None:
            missing = [
                flag
                for flag, value in (("--clip", cfg.clip), ("--concepts", cfg.concepts), ("--prompts", cfg.prompts))
                if value is None
            ]
            if missing:
                raise ConfigError(
                    f"a base of your own ({cfg.base}) needs {', '.join(missing)}: pass a CLIP folder or "
                    "open_clip:MODEL:CHECKPOINT (--clip), --concepts real or a bank file, and a prompts file "
                    "(--prompts); --preset toy takes the toy world's parts instead"
                )
        preset = get_preset(self.preset) if self.preset else None
        self.base_dir = Path(cfg.base) if cfg.base else preset.base
        self.clip_spec = cfg.clip or preset.clip
        parse_clip_spec(self.clip_spec)
        self.prompts = self.default_prompts = _prompt_list(cfg.prompts) or list(preset.prompts)
        self.direction_prompts = _prompt_list(cfg.direction_prompts)
        self.bank = load_concept_bank(cfg.concepts or preset.concepts)
        if not (self.base_dir / "model_index.json").is_file():
            raise MissingInputError(f"no diffusers pipeline at {self.base_dir}: model_index.json is missing")
        check_device(cfg.device)
        self.base_fingerprint = fingerprint_folder(self.base_dir)
        size = native_size(self.base_dir)
        self.sampler = replace(cfg.sampler, height=cfg.height or size, width=cfg.width or size)
        self.cache = ImageCache(cfg.cache_dir or default_cache_dir())
        if self.cache.root.exists() and not self.cache.root.is_dir():
            raise InputError(f"cache folder {self.cache.root} is a file; give a folder (--cache)")
        self._embedder = None
        self._base_pipe = None
        self._lora_on_base = False  # the base pipeline holds a LoRA's weights
        self._fused: tuple[str, object] | None = None  # (fingerprint, FusedLora) of the last LoRA sampled
        self._base_embeddings: dict[tuple, np.ndarray] = {}
        self._directions: dict[tuple, object] = {}

    # ------------------------------------------------------------------------------------------------------------
    # the stages, each usable on its own (the benchmark scores several methods on one set of embeddings)

    def check_personalization(self, target: Personalization) -> Checked:
        """Stage 1: the personalization's files, its fingerprint, and the base it was trained on (one policy:
        a LoRA that finexl recorded as trained on another base is refused unless ``allow_other_base``)."""
        if target.model:
            if not (Path(target.model) / "model_index.json").is_file():
                raise MissingInputError(f"no diffusers pipeline at {target.model}: model_index.json is missing")
            return Checked(lora_file=None, fingerprint=fingerprint_folder(target.model), trained_on=None)
        files, bases = [], []
        for path, _ in target.loras:
            lora_file = resolve_lora_file(path)
            trained_on = recorded_base(lora_file)
            if trained_on is not None and trained_on != self.base_fingerprint:
                message = (
                    f"the LoRA {lora_file} was trained by finexl on another base (fingerprint {trained_on}) than "
                    f"{self.base_dir} ({self.base_fingerprint})"
                )
                if not self.config.allow_other_base:
                    raise OtherBaseError(
                        f"{message}; pass --allow-other-base to explain what it does to this base", trained_on
                    )
                logger.warning("%s: explaining what it does to this base", message)
            files.append(lora_file)
            bases.append(trained_on)
        if not target.others:
            fingerprint = lora_fingerprint(self.base_fingerprint, fingerprint_folder(files[0]), target.scale)
            return Checked(lora_file=str(files[0]), fingerprint=fingerprint, trained_on=bases[0])
        check_stack(files)
        scales = [s for _, s in target.loras]
        parts = "+".join(f"{fingerprint_folder(f)}*{s!r}" for f, s in zip(files, scales, strict=True))
        return Checked(
            lora_file=str(files[0]),
            fingerprint=lora_fingerprint(self.base_fingerprint, parts, 1.0),
            trained_on=bases[0],
            stack=tuple((str(f), s) for f, s in zip(files, scales, strict=True)),
        )

    def sample(
        self,
        target: Personalization,
        checked: Checked | None = None,
        seeds: list[int] | None = None,
        null: bool | None = None,
        n: int | None = None,
    ) -> PairedImages:
        """Stage 2: personalized, base and (with the null test) base-with-other-seeds images, from the cache where
        present: the first ``n`` pairs (default all the config's). ``seeds`` replaces the config's (the benchmark's
        unpaired check)."""
        cfg = self.config
        checked = checked or self.check_personalization(target)
        prompts, default_seeds = requests(self.prompts, n or cfg.n_pairs, cfg.seed)
        seeds = seeds or default_seeds
        tuned = cached_samples(
            lambda: self._tuned_pipe(target, checked),
            checked.fingerprint,
            [target.tuned_prompt(p) for p in prompts],
            seeds,
            self.sampler,
            self.cache,
            "personalized",
            self._batch_bars,
        )
        base, null_images = self.base_images(prompts, seeds, cfg.null if null is None else null)
        return PairedImages(prompts, seeds, base, tuned, null_images)

    def base_images(self, prompts: list[str], seeds: list[int], null: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The base's images on ``prompts`` and ``seeds`` and, with ``null``, on the same prompts with other seeds;
        from the cache where present."""
        base = cached_samples(
            self._base, self.base_fingerprint, prompts, seeds, self.sampler, self.cache, "base", self._batch_bars
        )
        if not null:
            return base, None
        null_seeds = [s + NULL_SEED_OFFSET for s in seeds]
        return base, cached_samples(
            self._base,
            self.base_fingerprint,
            prompts,
            null_seeds,
            self.sampler,
            self.cache,
            "base (null)",
            self._batch_bars,
        )

    def prepare_base(self) -> None:
        """Make the base's part of every explanation now (images into the cache, their embeddings, the text
        directions), so that the models explained next, here or by workers sharing the cache, pay only for their
        own images."""
        prompts, seeds = requests(self.prompts, self.config.n_pairs, self.config.seed)
        base, null = self.base_images(prompts, seeds, self.config.null)
        self._embed_base("base", prompts, seeds, base)
        if null is not None:
            self._embed_base("null", prompts, seeds, null)
        self.directions(prompts)

    def base_embeddings(self) -> tuple[list[str], list[int], np.ndarray, np.ndarray | None]:
        """The prompts, seeds and embeddings of the base (and null) images of every pair the run may draw
        (``n_pairs``), made now where missing; what a collection stores for search."""
        prompts, seeds = requests(self.prompts, self.config.n_pairs, self.config.seed)
        base, null = self.base_images(prompts, seeds, self.config.null)
        null_e = self._embed_base("null", prompts, seeds, null) if null is not None else None
        return prompts, seeds, self._embed_base("base", prompts, seeds, base), null_e

    def embed(self, images: PairedImages, previous: PairedEmbeddings | None = None) -> PairedEmbeddings:
        """Stage 4: CLIP image embeddings. The base's are computed once per (prompt, seed); ``previous``: the
        embeddings of the first pairs of ``images`` (an earlier round), whose personalized images are not embedded
        again."""
        base = self._embed_base("base", images.prompts, images.seeds, images.base)
        null = self._embed_base("null", images.prompts, images.seeds, images.null) if images.null is not None else None
        done = 0 if previous is None else len(previous.tuned)
        tuned = self.embedder.embed_images(images.tuned[done:])
        if done:
            tuned = np.concatenate([previous.tuned, tuned])
        return PairedEmbeddings(base, tuned, null)

    def _embed_base(self, kind: str, prompts: list[str], seeds: list[int], images: np.ndarray) -> np.ndarray:
        keys = [(kind, p, int(s)) for p, s in zip(prompts, seeds, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self._base_embeddings]
        if todo:
            for i, e in zip(todo, self.embedder.embed_images(images[todo]), strict=True):
                self._base_embeddings[keys[i]] = e
        return np.stack([self._base_embeddings[k] for k in keys])

    def directions(self, prompts: list[str], bank=None):
        """Stage 5: the text directions f(C) of the bank over ``prompts`` (the direction prompts if set)."""
        bank = bank or self.bank
        used = self.direction_prompts or prompts
        key = (tuple(used), bank.digest())
        if key not in self._directions:
            self._directions[key] = text_directions(self.embedder, bank, used, self.cache.root)
        return self._directions[key]

    def decompose(self, embeddings: PairedEmbeddings, directions, method: str | None = None) -> Decomposed:
        """Stage 6: scores, intervals and null thresholds (see ``scoring.decompose_divergence``)."""
        cfg = self.config
        method = method or cfg.method
        if method not in ESTIMATORS:
            raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(ESTIMATORS)}")
        return decompose_divergence(
            embeddings.base,
            embeddings.tuned,
            directions,
            method,
            embeddings.null,
            cfg.n_bootstrap,
            cfg.n_null,
            cfg.confidence,
            cfg.null_quantile,
            cfg.seed,
        )

    def bank_with_tags(self, checked: Checked):
        """The concept bank with the LoRA files' ``concepts_from_tags`` most frequent training tags added as the
        aspect ``tags``; refused in one line when the files hold no training tags."""
        files = [f for f, _ in checked.stack] or [checked.lora_file]
        counts: dict[str, int] = {}
        for f in files:
            for tag, n in inspect(f).tags:
                if tag.lower() not in STOP_WORDS and not CONTROL_CHARACTERS.search(tag):
                    counts[tag] = counts.get(tag, 0) + n
        if not counts:
            raise ConfigError(
                f"--concepts-from-tags: {', '.join(Path(f).name for f in files)} holds no training tags "
                "(kohya's ss_tag_frequency); finexl inspect shows the file's metadata"
            )
        top = sorted(counts, key=lambda t: (-counts[t], t))[: self.config.concepts_from_tags]
        return self.bank.extended("tags", top, group="tags")

    def resolve_trigger(self, lora_file: str) -> dict | None:
        """The trigger word of ``config.trigger``, where it came from, and a DreamBooth model's (class prompt,
        instance prompt); None for no trigger. ``None`` (the default): a DreamBooth model's identifier (see
        :func:`finexl.loading.inspection.dreambooth_of`), no trigger for any other LoRA; ``none``: no trigger;
        ``auto``: from the file (:func:`finexl.loading.inspection.trigger_from`); else the word itself. Refused in
        one line when ``auto`` finds none or the base's tokenizer cannot read the word."""
        asked = (self.config.trigger or "").strip()
        if asked.lower() == "none":
            return None
        if not asked:  # a DreamBooth model by default: from the header and the training record, no tensor read
            pair = dreambooth_of(lora_file)
            if pair is None:
                return None
            word, source = identifier_of(pair), "the DreamBooth instance prompt, by default for a DreamBooth model"
        elif asked.lower() == "auto":
            info = inspect(lora_file)
            pair, word = info.dreambooth, trigger_from(info)
            if word is None:
                raise ConfigError(
                    f"--trigger auto: {Path(lora_file).name} names no trigger phrase, DreamBooth instance prompt or "
                    "training tags; give the word (--trigger WORD)"
                )
            source = (
                "the trigger phrase in the file"
                if word == info.trigger
                else "the DreamBooth instance prompt"
                if word == info.identifier
                else "the most frequent training tag"
            )
        else:
            pair, word, source = dreambooth_of(lora_file), asked, "given"
        if not word or CONTROL_CHARACTERS.search(word):
            raise ConfigError(f"trigger word {word!r} is empty or holds a control character")
        self._check_readable(word)
        return {"word": word, "source": source, "instance": pair if word == identifier_of(pair) else None}

    def _check_readable(self, word: str) -> None:
        """The base's tokenizers must read every character of ``word`` (no unknown token)."""
        from transformers import AutoTokenizer

        for name in ("tokenizer", "tokenizer_2"):
            folder = self.base_dir / name
            if not folder.is_dir():
                continue
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
                raise ConfigError(
                    f"the base's {name} cannot read the trigger word {word!r} (unknown tokens): the model never saw "
                    "it in training either"
                )

    def check_prompts_fit(self) -> None:
        """The prompts the directions are built from must leave room in the CLIP text window for every concept
        phrase: a prompt cut at the window would give "prompt, phrase" and "prompt" the same embedding, so a
        direction of zero and a wrong "no change". Refused in one line before any image is made."""
        window, count = self.embedder.text_window, self.embedder.count_tokens
        if window is None or count("a") is None:
            return
        longest = max(self.bank.phrases(), key=lambda phrase: count(compose("", phrase)))
        for i, prompt in enumerate(dict.fromkeys(self.direction_prompts or self.prompts)):
            n = count(compose(prompt, longest))
            if n > window:
                raise PromptsError(
                    f"prompt {i + 1} ({prompt[:40]!r}...) is {count(prompt)} tokens; with the concept phrase "
                    f"{longest!r} it needs {n} of the {window} the CLIP text encoder reads: shorten it"
                )

    def scheduler_class(self) -> str | None:
        """The class of the scheduler the images are sampled with: the multistep solver the sampler names, or the
        base's own (from its ``model_index.json``) with ``"default"`` or a flow-matching base."""
        entry = read_model_index(self.base_dir).get("scheduler")
        own = entry[1] if isinstance(entry, list) and len(entry) == 2 else ""
        return sampled_with(own, self.sampler.scheduler) or None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder(self.clip_spec, device=self.config.device)
        return self._embedder

    # ------------------------------------------------------------------------------------------------------------

    def __call__(
        self,
        lora: str | list[str] | None = None,
        model: str | None = None,
        scale: float | list[float] = 1.0,
        scales: list[float] | None = None,
        interaction: bool | None = None,
    ) -> Explanation:
        """Explain ``lora`` at ``scale`` (or a fine-tuned pipeline folder ``model``).

        ``lora`` a list: a stack, the LoRAs fused together, each at its ``scale`` (one number for all, or one per
        LoRA); with ``interaction`` (default: the config's) each is also explained alone on the same base images and
        ``Explanation.stack`` says per aspect whether the stack's effect is the sum of theirs. ``scales`` (default:
        the config's): a weight sweep, the LoRA explained at every scale on the same base and null images
        (``Explanation.sweep``: each aspect's score, interval and verdict per scale, its onset and whether it grows
        steadily); the explanation itself is the one at the largest scale. With a trigger word (the config's
        ``trigger``; by default a DreamBooth model's identifier) the LoRA is also explained without it, the leak
        (``Explanation.trigger``); a DreamBooth model without ``prompts`` of the user's is explained on its class
        prompt, which it is sampled on as its instance prompt."""
        timings = Timings()
        scales = check_scales(scales) if scales is not None else self.config.scales
        interaction = self.config.interaction if interaction is None else interaction
        target = Personalization.of(lora, model, scale)
        if scales is not None:
            if model or target.others:
                raise ConfigError("a weight sweep (scales) takes one LoRA, not a fine-tuned pipeline or a stack")
            target = replace(target, scale=scales[-1])
        single = not (model or target.others)  # a trigger word: one LoRA (a sweep's leak at its largest scale)
        if (self.config.trigger or "none").strip().lower() != "none" and not single:
            raise ConfigError("a trigger word is explained on one LoRA, not a pipeline folder or a stack")
        alone = [Personalization(lora=p, scale=s) for p, s in target.loras] if target.others else []
        if interaction and not alone:
            raise ConfigError("interaction compares a stack of LoRAs with each alone: give two or more LoRAs")

        # 1. check the personalization against the base, the trigger word, and the prompts against the text window,
        # before any image; a DreamBooth model (without prompts of the user's) is explained on its class prompt
        with timings("check"):
            checked = self.check_personalization(target)
            trigger = self.resolve_trigger(checked.lora_file) if single else None
            pair = trigger.pop("instance") if trigger is not None else None
            prompts = [pair[0]] if pair is not None and self.config.prompts is None else self.prompts
        with self._prompts(prompts):
            with timings("check"):
                self.check_prompts_fit()
                below = [(s, self.check_personalization(replace(target, scale=s))) for s in (scales or [])[:-1]]
                singles = [(t, self.check_personalization(t)) for t in alone] if interaction else []
                bank = self.bank_with_tags(checked) if self.config.concepts_from_tags else self.bank
                plain = target
                if trigger is not None:
                    target = replace(target, trigger=trigger["word"], instance=pair)
                    logger.info("trigger %r (%s); the leak: without it", trigger["word"], trigger["source"])

            # 2.-6. paired sampling (same prompts and seeds, hence noise, for both models; cached by content),
            # optional VLM concept proposals, CLIP embeddings, text directions, and the decomposition of V_div onto
            # them: in rounds of pairs until every verdict is settled with samples='auto'; for a sweep at every
            # scale, for a stack's interaction each LoRA alone too, with a trigger word the LoRA without it
            swept = [self._rounds(replace(target, scale=s), c, timings, bank)[3] for s, c in below]
            each = [self._rounds(t, c, timings, bank)[3] for t, c in singles]
            leak = self._rounds(plain, checked, timings, bank)[3] if trigger is not None else None
            bank, proposals, note, done = self._rounds(target, checked, timings, bank)

            # 7. where it changed: the pairs kept for the report, and a map per CHANGED aspect
            samples = None
            if self.config.report_pairs:
                with timings("maps"), self._maps_bar(done.decomposed):
                    samples = self.where_changed(done.images, done.embeddings, bank, done.decomposed.aspects)

            # 8. the explanation, with everything needed to trace it back and run it again
            explanation = self._explanation(target, checked, bank, proposals, note, done, timings)
            explanation.settings["interaction"] = bool(each)
            if prompts is not self.default_prompts:
                explanation.settings["prompts"] = list(prompts)
            explanation.samples = samples
            explanation.embeddings = done.embeddings
            if scales:
                explanation.sweep = sweep_record(scales, [*swept, done])
            if leak is not None:
                explanation.trigger = trigger_record(trigger, target, done, leak)
            if each:
                directions = self.directions(requests(self.prompts, self.config.n_pairs, self.config.seed)[0], bank)
                explanation.stack = interaction_record(target, done, each, directions, self.config)
        explanation.check()
        return explanation

    @contextmanager
    def _prompts(self, prompts: list[str]) -> Iterator[None]:
        """The prompts of one explanation (a DreamBooth model's class prompt), the pipeline's own again after it."""
        self.prompts = prompts
        try:
            yield
        finally:
            self.prompts = self.default_prompts

    def _rounds(self, target: Personalization, checked: Checked, timings: Timings, bank=None):
        """Stages 2 to 6 over the rounds of pairs: one round of ``samples`` pairs, or with ``samples='auto'``
        rounds of ``auto_round`` pairs (each the first n of the same pairs) until :func:`sequential.unsettled`
        finds every verdict settled or ``auto_cap`` is reached. Returns the bank (with VLM proposals), the
        proposals, a note if proposing failed, and the :class:`Rounds`."""
        cfg = self.config
        auto = cfg.samples == "auto"
        plan = rounds(cfg.auto_round, cfg.auto_round, cfg.auto_cap) if auto else [cfg.samples]
        bar = tqdm(total=plan[-1], desc="explain", unit="pair", disable=not self.progress, dynamic_ncols=True)
        bar.set_postfix_str(f"round 1 of at most {len(plan)}" if auto else "sampling")
        bank, proposals, note = bank or self.bank, [], None
        embeddings, looks = None, []
        for k, n in enumerate(plan):
            with timings("sample"), self._no_batch_bars():
                images = self.sample(target, checked, n=n)  # 2.
            if k == 0 and (cfg.vlm or cfg.vlm_endpoint):  # 3. concept proposals by a VLM shown the first pairs
                with timings("propose"):
                    bank, proposals, note = self._propose(images)
            with timings("embed"):
                embeddings = self.embed(images, previous=embeddings)  # 4.
                directions = self.directions(requests(self.prompts, cfg.n_pairs, cfg.seed)[0], bank)  # 5.
            with timings("decompose"):
                decomposed = self.decompose(embeddings, directions)  # 6.
            bar.update(n - bar.n)
            if not auto:
                break
            left = unsettled(
                decomposed.evidence,
                bank.aspects,
                decomposed.score_of(bank.aspects),
                n,
                cfg.auto_cap,
                cfg.auto_error,
                cfg.auto_verdicts,
            )
            looks.append(Look(n, left))
            logger.info("samples auto: %d pairs, %s", n, f"not settled: {', '.join(left)}" if left else "settled")
            status = (
                f"{len(left)} verdict{'s' * (len(left) != 1)} to settle"
                if left
                else "the cap"
                if n == cfg.auto_cap
                else "every verdict settled"
            )
            bar.set_postfix_str(f"after round {k + 1} of at most {len(plan)}: {status}")
            if not left:
                bar.total = n  # stopped early: the bar ends full
                bar.refresh()
                break
        bar.close()
        return bank, proposals, note, Rounds(images, embeddings, decomposed, looks)

    def _maps_bar(self, decomposed: Decomposed):
        n = sum(a.changed for a in decomposed.aspects)
        return tqdm(
            total=1,
            desc=f"maps of {n} CHANGED aspect{'s' * (n != 1)}",
            disable=not self.progress,
            bar_format="{desc}: {elapsed}",
        )

    def _explanation(
        self, target: Personalization, checked: Checked, bank, proposals, note, done: Rounds, timings: Timings
    ) -> Explanation:
        """Stage 8: the explanation from the typed parts of the stages before."""
        cfg = self.config
        settings = {
            **cfg.to_dict(),
            "preset": self.preset,
            "lora": target.lora,
            "model": target.model,
            "lora_scale": target.scale,
            "sampler": {**self.sampler.to_dict(), "scheduler_class": self.scheduler_class()},
            "vlm_endpoint": redact_url(cfg.vlm_endpoint) if cfg.vlm_endpoint else None,
        }
        sequential = None
        if done.looks:
            last = done.looks[-1]
            sequential = {
                "rule": "stochastic curtailment",
                "round": cfg.auto_round,
                "cap": cfg.auto_cap,
                "error": cfg.auto_error,
                "verdicts": cfg.auto_verdicts,
                "looks": [asdict(look) for look in done.looks],
                "stopped": "settled" if last.settled and last.n < cfg.auto_cap else "cap",
            }
        explanation = Explanation(
            method=cfg.method,
            aspects=done.decomposed.aspects,
            concepts=done.decomposed.concepts,
            residual=done.decomposed.residual,
            divergence=done.decomposed.divergence,
            concept_bank={
                "name": bank.name,
                "digest": bank.digest(),
                "n_concepts": len(bank.concepts),
                "aspects": bank.aspects,
                "proposed": [{"phrase": p, "pairs": c} for p, c in proposals],
                "proposal_note": note,
            },
            models={
                "base": {"path": str(self.base_dir), "fingerprint": self.base_fingerprint},
                "personalized": {
                    "lora": target.lora,
                    "model": target.model,
                    "scale": target.scale,
                    "fingerprint": checked.fingerprint,
                    "trained_on": checked.trained_on,
                    **({"stack": [{"lora": p, "scale": s} for p, s in target.loras]} if target.others else {}),
                },
                "clip": {"name": self.embedder.name, "fingerprint": self.embedder.fingerprint},
            },
            settings=settings,
            seconds=timings.rounded(),
            sequential=sequential,
            finexl_version=__version__,
        )
        explanation.check()  # what is written is what the schema reads back
        return explanation

    def where_changed(
        self, images: PairedImages, embeddings: PairedEmbeddings, bank, aspects: list[AspectScore]
    ) -> Samples | None:
        """Stage 7: keep ``report_pairs`` pairs (those that moved most along each CHANGED aspect, in turn) and map,
        for every CHANGED aspect, where in those pairs it changed; plus the mean map over the first ``map_pairs``
        pairs (see ``finexl/explanation/maps.py`` for the method)."""
        cfg = self.config
        directions = self.directions(requests(self.prompts, cfg.n_pairs, cfg.seed)[0], bank)
        units = {a.aspect: aspect_direction(directions, a.concept, a.direction) for a in aspects if a.changed}
        D = embeddings.tuned - embeddings.base
        moves = {a: D @ u for a, u in units.items()}
        keep = pairs_to_show(moves, len(D), cfg.report_pairs)
        n_mean = min(cfg.map_pairs, len(D))
        mapped = sorted(set(range(n_mean)) | set(keep))
        position = {i: j for j, i in enumerate(mapped)}
        maps, mean_maps = {}, {}
        if units:
            names = list(units)
            try:
                stacks = change_maps(
                    self.embedder,
                    images.base[mapped],
                    images.tuned[mapped],
                    np.stack([units[a] for a in names]),
                    steps=cfg.map_steps,
                )
            except NotImplementedError as err:
                logger.warning("no change maps: %s", err)
                stacks = None
            for a, m in zip(names, stacks if stacks is not None else [], strict=False):
                maps[a] = m[[position[i] for i in keep]]
                mean_maps[a] = normalized(m[:n_mean]).mean(axis=0)  # ``mapped`` starts with 0 .. n_mean - 1
        return Samples(
            prompts=[images.prompts[i] for i in keep],
            seeds=[int(images.seeds[i]) for i in keep],
            index=keep,
            base=images.base[keep],
            tuned=images.tuned[keep],
            moves={a: [round(float(m[i]), 5) for i in keep] for a, m in moves.items()},
            maps=maps,
            mean_maps=mean_maps,
            n_mean=n_mean if maps else 0,
        )

    # ------------------------------------------------------------------------------------------------------------

    @contextmanager
    def _no_batch_bars(self) -> Iterator[None]:
        """No bar per batch of images while the explanation's own bar over its rounds runs."""
        self._batch_bars = False
        try:
            yield
        finally:
            self._batch_bars = self.progress

    def _base(self):
        """The base pipeline, with the base's exact weights (a LoRA of an earlier stage switched off)."""
        if self._base_pipe is None:
            cfg = self.config
            self._base_pipe = load_pipeline(self.base_dir, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile)
        if self._lora_on_base:
            self._fused[1].restore(self._base_pipe)
            self._lora_on_base = False
        return self._base_pipe

    def _tuned_pipe(self, target: Personalization, checked: Checked):
        """The personalized pipeline: a fine-tuned folder, or the base with the LoRA fused in (read and checked once
        per LoRA; later rounds switch the fused weights back in)."""
        cfg = self.config
        if target.model:
            return load_pipeline(target.model, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile)
        pipe = self._base()
        if self._fused is not None and self._fused[0] == checked.fingerprint and self._fused[1].tuned is not None:
            self._fused[1].apply(pipe)
        else:
            self._fused = None  # another LoRA's weights are not kept
            keep = cfg.samples == "auto"  # the personalized weights kept only for the rounds of samples='auto'
            if checked.stack:  # each LoRA an adapter at its weight (diffusers' set_adapters), all fused at once
                names = [
                    load_lora(pipe, f, scale=s, adapter_name=f"finexl_{k}") for k, (f, s) in enumerate(checked.stack)
                ]
                pipe.set_adapters(names, adapter_weights=[s for _, s in checked.stack])
                self._fused = (checked.fingerprint, fuse_lora(pipe, names, keep_tuned=keep))
            else:
                name = load_lora(pipe, checked.lora_file, scale=target.scale)  # checks every module against the base
                # sampled at the base's speed
                self._fused = (checked.fingerprint, fuse_lora(pipe, name, keep_tuned=keep))
        self._lora_on_base = True
        return pipe

    def _propose(self, images: PairedImages):
        cfg = self.config
        try:
            backend = make_chat(
                cfg.vlm,
                cfg.vlm_endpoint,
                cfg.vlm_model,
                self.cache.root,
                vision=True,
                device=cfg.device,
                api_key_env=cfg.api_key_env,
            )
            proposals = propose_concepts(backend, images.base, images.tuned, images.prompts, cfg.vlm_pairs)
        except LLMError as err:  # the explanation goes on with the bank as it is
            note = f"VLM proposals failed ({err}); the concept bank was used as it is"
            logger.warning(note)
            return self.bank, [], note
        bank = self.bank.extended("proposed", [p for p, _ in proposals]) if proposals else self.bank
        return bank, proposals, None


def check_stack(files: list[Path]) -> None:
    """A stack of LoRAs: no file twice, and every LoRA for the same base family (read from the files' keys and
    shapes, :func:`finexl.loading.inspection.inspect`), before any image."""
    seen = {}
    for f in files:
        key = f.resolve()
        if key in seen:
            raise ConfigError(f"the stack names one LoRA twice: {seen[key]} and {f}")
        seen[key] = f
    family = {f: inspect(f).family for f in files}
    known = [f for f in files if family[f] != "unknown"]
    other = next((f for f in known if family[f] != family[known[0]]), None)
    if other is not None:
        raise LoraError(
            f"the stack's LoRAs are for different bases: {known[0].name} fits {FAMILY_NAMES[family[known[0]]]}, "
            f"{other.name} fits {FAMILY_NAMES[family[other]]}"
        )


def trigger_record(trigger: dict, target: Personalization, done: Rounds, leak: Rounds) -> dict:
    """A trigger word's record: the word and where it came from, a prompt with it, and what changes without it
    (the leak): every aspect's score, interval, null threshold and verdict on the prompts without the trigger, from
    the same base images."""
    rows = {
        a.aspect: {
            "score": round(float(a.score), 6),
            "interval": [round(float(x), 6) for x in a.interval],
            "threshold": a.threshold,
            "direction": a.direction,
            "toward": a.toward,
            "changed": bool(a.changed),
        }
        for a in leak.decomposed.aspects
    }
    first = done.images.prompts[0]
    return {
        "word": trigger["word"],
        "source": trigger["source"],
        "example": {"base": first, "with": target.tuned_prompt(first), "without": first},
        "pairs": len(leak.images.seeds),
        "leak": rows,
        "leaked": [a for a, r in rows.items() if r["changed"]],
    }


def interaction_record(target: Personalization, stack: Rounds, singles: list[Rounds], directions, cfg) -> dict:
    """How a stack's effect compares with the sum of its LoRAs' effects alone, per aspect, on the same pairs.

    Along each aspect's direction (its concept's text direction, pointing the way the stack moved it), every pair's
    move under the stack and under each LoRA alone; the interaction is the stack's move minus the sum of the single
    moves, averaged over the pairs, with a bootstrap interval over the pairs. Verdict: ``new`` where the stack is
    CHANGED, ``strengthened`` or ``weakened`` where the interval lies above or below 0, else ``additive``;
    ``new`` instead of ``strengthened`` where no LoRA alone is CHANGED; ``none`` where nothing is CHANGED."""
    n = min(len(r.images.seeds) for r in (stack, *singles))  # the first n pairs are the same in every run
    base = stack.embeddings.base[:n]
    moved = stack.embeddings.tuned[:n] - base
    alone = [r.embeddings.tuned[:n] - base for r in singles]
    rng = np.random.default_rng(cfg.seed)
    draws = np.stack([bootstrap_sample(rng, n) for _ in range(cfg.n_bootstrap)])
    verdicts = [{a.aspect: a for a in r.decomposed.aspects} for r in singles]
    aspects = {}
    for a in stack.decomposed.aspects:
        u = aspect_direction(directions, a.concept, "decrease" if a.direction == "decrease" else "increase")
        on_stack, on_each = moved @ u, [d @ u for d in alone]
        interaction = on_stack - np.sum(on_each, axis=0)
        low, high = percentile_interval(interaction[draws].mean(axis=1), cfg.confidence)
        single_changed = [v[a.aspect].changed for v in verdicts]
        if not (a.changed or any(single_changed)):
            verdict = "none"
        elif low > 0:
            verdict = "strengthened" if any(single_changed) else "new"
        else:
            verdict = "weakened" if high < 0 else "additive"
        aspects[a.aspect] = {
            "toward": a.toward,
            "stack": round(float(on_stack.mean()), 6),
            "alone": [round(float(m.mean()), 6) for m in on_each],
            "sum": round(float(np.sum(on_each, axis=0).mean()), 6),
            "interaction": round(float(interaction.mean()), 6),
            "interval": [round(float(low), 6), round(float(high), 6)],
            "changed": {"stack": bool(a.changed), "alone": single_changed},
            "verdict": verdict,
        }
    return {
        "loras": [{"lora": p, "scale": s} for p, s in target.loras],
        "pairs": n,
        "confidence": cfg.confidence,
        "aspects": aspects,
    }


def check_scales(scales) -> list[float]:
    """A weight sweep's scales: two or more distinct finite numbers above 0, in increasing order."""
    values = [float(s) for s in scales]
    bad = [s for s in values if not math.isfinite(s) or s <= 0]
    if bad:
        raise ConfigError(f"a weight sweep's scales must be finite numbers above 0; got {bad[0]:g}")
    if len(values) < 2 or len(set(values)) != len(values):
        raise ConfigError(
            f"a weight sweep needs two or more distinct scales; got {', '.join(f'{s:g}' for s in values)}"
        )
    return sorted(values)


def sweep_record(scales: list[float], runs: list[Rounds]) -> dict:
    """What a weight sweep found, per aspect: score, interval, direction and verdict at every scale; the
    ``onset``, the smallest scale at which the aspect is CHANGED (None: at none); ``steady``: every next scale's
    score reaches at least the lower end of the interval before it (it grows, up to the noise)."""
    by_aspect: dict[str, dict] = {}
    for run in runs:
        for a in run.decomposed.aspects:
            row = by_aspect.setdefault(a.aspect, {"score": [], "interval": [], "direction": [], "changed": []})
            row["score"].append(round(float(a.score), 6))
            row["interval"].append([round(float(x), 6) for x in a.interval])
            row["direction"].append(a.direction)
            row["changed"].append(bool(a.changed))
    for row in by_aspect.values():
        row["onset"] = next((s for s, c in zip(scales, row["changed"], strict=True) if c), None)
        row["steady"] = all(row["score"][i + 1] >= row["interval"][i][0] for i in range(len(scales) - 1))
    return {"scales": scales, "pairs": [len(run.images.seeds) for run in runs], "aspects": by_aspect}


def explain(
    lora: str | list[str] | None = None,
    model: str | None = None,
    *,
    scale: float | list[float] = 1.0,
    scales: list[float] | None = None,
    config: ExplainConfig | None = None,
    progress: bool = False,
    **settings,
) -> Explanation:
    """Explain how a personalized model differs from its base.

    Args:
        lora: a LoRA ``.safetensors`` file or a folder holding ``pytorch_lora_weights.safetensors``; a list of
            them explains the stack (see ``interaction``).
        model: a fine-tuned diffusers pipeline folder (instead of ``lora``).
        scale: LoRA strength (a stack: one for all, or one per LoRA).
        scales: a weight sweep: the LoRA explained at each of these strengths on the same base images
            (``Explanation.sweep``); the explanation is the one at the largest.
        config: all settings at once; or give them as keywords (``base=``, ``prompts=[...]`` or a file, ``clip=``,
            ``concepts=``, ``samples=``, ``device=``, ... see :class:`ExplainConfig`).
        progress: show progress bars.

    Example::

        import finexl
        e = finexl.explain(lora="data/toy_loras/red")
        print(e.table())
    """
    if config is not None and settings:
        raise ConfigError("give either config= or settings as keywords, not both")
    if config is None:
        unknown = sorted(set(settings) - set(ExplainConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; see finexl.ExplainConfig")
        config = ExplainConfig(**settings)
    return ExplainPipeline(config, progress=progress)(lora=lora, model=model, scale=scale, scales=scales)
