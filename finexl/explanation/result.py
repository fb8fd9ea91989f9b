"""The result of an explanation: :class:`Explanation`, saved as ``explanation.json`` and read back from it."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from finexl.errors import InputError, MissingInputError, OutputError
from finexl.narrate.narrator import narrate
from finexl.utils import atomic_dir, atomic_write_json, writing
from finexl.validation import load_json, read_json, validate

SCHEMA = "finexl-explanation/1"
SAMPLES_DIR = "samples"  # beside explanation.json: the kept pairs (PNG), samples.json and maps.npz


@dataclass
class AspectScore:
    """One aspect's verdict: its score in [0, 1] with an interval, and whether it beat the null threshold."""

    aspect: str
    group: str
    score: float
    interval: list[float]  # [low, high]
    direction: str  # "increase", "decrease" or "none"
    concept: str  # the concept of the aspect that moved most
    toward: str  # the phrase the change moves toward (the antonym for a decrease)
    threshold: float | None  # what the base reaches against itself; None without the null test
    changed: bool
    joint_score: float | None = None  # two-part methods (finexl): the joint fit's score
    joint_interval: list[float] | None = None  # its interval, [low, high]
    joint_threshold: float | None = None  # its own null threshold: CHANGED needs joint_interval[0] above it too
    # not CHANGED but above its null: the share of its score each CHANGED aspect's part of the joint fit accounts for
    accounted_for: dict[str, float] | None = None

    @property
    def above_null(self) -> bool:
        """The projection's interval lies above its null threshold (the first half of the CHANGED rule)."""
        return self.threshold is not None and self.interval[0] > self.threshold


@dataclass
class Samples:
    """The pairs an explanation keeps for its report, and where each CHANGED aspect changed (see ``maps.py``).

    ``index``: the kept pairs' positions among all pairs; ``moves[aspect]``: each kept pair's move along the aspect;
    ``maps[aspect]``: the kept pairs' maps ``(k, h, w)``; ``mean_maps[aspect]``: the mean of the normalized maps of
    the first ``n_mean`` pairs ``(h, w)``.
    """

    prompts: list[str]
    seeds: list[int]
    index: list[int]
    base: np.ndarray  # (k, h, w, 3) uint8
    tuned: np.ndarray  # (k, h, w, 3) uint8
    moves: dict[str, list[float]] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    mean_maps: dict[str, np.ndarray] = field(default_factory=dict)
    n_mean: int = 0

    def save(self, folder: str | Path) -> Path:
        """Write ``folder`` whole (atomically): ``base_000.png``, ``tuned_000.png``, ..., ``samples.json``,
        ``maps.npz``."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            for j in range(len(self.index)):
                Image.fromarray(self.base[j]).save(tmp / f"base_{j:03d}.png")
                Image.fromarray(self.tuned[j]).save(tmp / f"tuned_{j:03d}.png")
            arrays = {f"map/{a}": m.astype(np.float16) for a, m in self.maps.items()}
            arrays |= {f"mean/{a}": m.astype(np.float32) for a, m in self.mean_maps.items()}
            np.savez_compressed(tmp / "maps.npz", **arrays)
            meta = {
                "prompts": self.prompts,
                "seeds": self.seeds,
                "index": self.index,
                "moves": self.moves,
                "n_mean": self.n_mean,
                "aspects": sorted(self.maps),
            }
            (tmp / "samples.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Samples:
        """Read a folder written by :meth:`save`; a missing or damaged file is named in the error."""
        folder = Path(folder)
        meta_path = folder / "samples.json"
        if not meta_path.is_file():
            raise MissingInputError(f"{meta_path} is missing: the sample pairs were not all written")
        meta = read_json(meta_path, "samples")
        index, prompts, seeds = list(meta["index"]), list(meta["prompts"]), list(meta["seeds"])
        if not (len(index) == len(prompts) == len(seeds)):
            raise InputError(f"{meta_path} is damaged: index, prompts and seeds differ in length")
        images = {"base": [], "tuned": []}
        for j in range(len(index)):
            for side in images:
                path = folder / f"{side}_{j:03d}.png"
                try:
                    with Image.open(path) as im:
                        images[side].append(np.asarray(im.convert("RGB")))
                except FileNotFoundError as err:
                    raise MissingInputError(f"{path} is missing: the sample pairs were not all written") from err
                except (UnidentifiedImageError, OSError) as err:
                    raise InputError(f"{path} is not a readable image: {err}") from err
        maps_path = folder / "maps.npz"
        try:
            with np.load(maps_path) as saved:
                maps = {k[4:]: saved[k].astype(np.float32) for k in saved.files if k.startswith("map/")}
                mean_maps = {k[5:]: saved[k] for k in saved.files if k.startswith("mean/")}
        except FileNotFoundError as err:
            raise MissingInputError(f"{maps_path} is missing: the change maps were not written") from err
        except (OSError, ValueError) as err:
            raise InputError(f"{maps_path} is damaged: {err}") from err
        base, tuned = np.stack(images["base"]) if index else None, np.stack(images["tuned"]) if index else None
        for a, m in maps.items():
            if len(m) != len(index):
                raise InputError(f"{maps_path} is damaged: {len(m)} maps of {a!r} for {len(index)} pairs")
        return cls(
            prompts,
            seeds,
            index,
            base,
            tuned,
            dict(meta.get("moves", {})),
            maps,
            mean_maps,
            int(meta.get("n_mean", 0)),
        )


@dataclass
class Explanation:
    """How a personalized model differs from its base, aspect by aspect (see ``docs`` for the schema).

    ``aspects`` come CHANGED first, then the rest, each by score. ``settings`` holds every setting of the run,
    ``models`` the fingerprints of the base, the personalization and the CLIP.
    """

    method: str
    aspects: list[AspectScore]
    concepts: list[dict]
    residual: dict
    divergence: dict
    concept_bank: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    sentences: dict | None = None
    # samples='auto': the rounds drawn and what was left to settle after each (see sequential.py)
    sequential: dict | None = None
    # a weight sweep: the LoRA at several scales on the same base images (see ``pipeline.sweep_record``)
    sweep: dict | None = None
    # a stack explained with its LoRAs alone: per aspect, the stack's effect against their sum
    stack: dict | None = None
    # explained with a trigger word: what changes without it (the leak), from the same base images
    trigger: dict | None = None
    finexl_version: str | None = None
    schema: str = SCHEMA
    # the kept pairs and change maps (saved beside the JSON by ``save``, never inside it)
    samples: Samples | None = field(default=None, repr=False, compare=False)
    # the run's CLIP embeddings (a ``PairedEmbeddings``: base, personalized, null), for further analysis; not saved
    embeddings: object | None = field(default=None, repr=False, compare=False)

    @property
    def changed(self) -> list[str]:
        """Names of the aspects marked CHANGED, strongest first."""
        return [a.aspect for a in self.aspects if a.changed]

    def aspect(self, name: str) -> AspectScore:
        for a in self.aspects:
            if a.aspect == name:
                return a
        raise KeyError(f"no aspect {name!r}; this explanation has {[a.aspect for a in self.aspects]}")

    def table(self, top: int | None = None) -> str:
        """A readable table, one row per aspect."""
        return format_explanation(self.to_dict(), top=top)

    def narrate(self, form: str = "bullets", aspects: list[str] | None = None, backend=None, retries: int = 2):
        """Sentences for this explanation (templated, or by a chat ``backend``); stored in ``sentences``."""
        narration = narrate(self.to_dict(), backend, form, aspects, retries=retries)
        self.sentences = narration.to_json()
        return narration

    def to_dict(self) -> dict:
        out = asdict(replace(self, samples=None, embeddings=None))  # arrays stay out of the JSON
        del out["samples"], out["embeddings"]
        return out

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``folder/explanation.json`` and the kept pairs and maps (``folder/samples/``); the report page is
        :func:`finexl.write_report` of the folder. Each file is written atomically, the JSON after the samples it
        refers to, so a folder with an ``explanation.json`` is complete. Refuses to replace an existing explanation
        unless ``overwrite``."""
        folder = Path(folder)
        if (folder / "explanation.json").exists() and not overwrite:
            raise OutputError(f"{folder / 'explanation.json'} exists; pass --overwrite (overwrite=True) to replace it")
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        if self.samples is not None:
            self.samples.save(folder / SAMPLES_DIR)
        return self.to_json(folder / "explanation.json")

    @property
    def target(self) -> dict:
        """What was explained, as :class:`~finexl.explanation.pipeline.ExplainPipeline` takes it: ``lora``,
        ``model`` and ``scale``."""
        p = self.models.get("personalized", {})
        if p.get("stack"):
            return {"lora": [x["lora"] for x in p["stack"]], "model": None, "scale": [x["scale"] for x in p["stack"]]}
        return {"lora": p.get("lora"), "model": p.get("model"), "scale": p.get("scale", 1.0)}

    def check(self) -> None:
        """Raise ``InputError`` if this explanation breaks its schema (what :meth:`from_dict` reads)."""
        validate(self.to_dict(), "explanation", "<explanation>")

    def to_json(self, path: str | Path) -> Path:
        """Write ``path`` (a file, or a folder that gets ``explanation.json``) atomically; returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / "explanation.json"
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, obj: dict, source: str = "<explanation>") -> Explanation:
        """An explanation from its decoded JSON, checked against ``finexl/schemas/explanation.schema.json``."""
        if isinstance(obj, dict) and obj.get("schema", SCHEMA) != SCHEMA:
            raise InputError(f"{source} has schema {obj.get('schema')!r}; this finexl reads {SCHEMA!r}")
        validate(obj, "explanation", source)
        known = {f.name for f in fields(cls)}
        aspect_keys = {f.name for f in fields(AspectScore)}
        aspects = [AspectScore(**{k: v for k, v in a.items() if k in aspect_keys}) for a in obj["aspects"]]
        return cls(**{k: v for k, v in obj.items() if k in known and k != "aspects"}, aspects=aspects)

    @classmethod
    def from_json(cls, path: str | Path) -> Explanation:
        """Read an ``explanation.json`` (or a folder holding one), checked against its schema."""
        path = Path(path)
        if path.is_dir():
            path = path / "explanation.json"
        return cls.from_dict(load_json(path, "explanation file"), str(path))  # the version, then the schema


def changed_rule(confidence: float, joint: bool) -> str:
    """The CHANGED rule as :func:`~finexl.explanation.scoring.decompose_divergence` computes it, in words."""
    first = (
        f"An aspect is CHANGED when its {int(round(confidence * 100))}% interval lies wholly above its null "
        "threshold (what the base reaches against itself with other seeds)"
    )
    if not joint:
        return f"{first}."
    return f"{first}, and the joint fit's interval lies wholly above the joint fit's own null: the fit needs it too."


def accounted_text(a: dict) -> str:
    """Which CHANGED aspects account for an aspect's score: 'colour accounts for 0.10 of its 0.21'."""
    if a.get("accounted_for") is None:  # an explanation made before finexl computed it, or without a joint fit
        return "which CHANGED aspects account for it was not computed"
    shares = {k: v for k, v in a["accounted_for"].items() if v >= 0.005}
    if not shares:
        return "no CHANGED aspect accounts for it"
    names = " and ".join(shares)
    each = ", ".join(f"{v:.2f}" for v in shares.values())
    verb = "accounts" if len(shares) == 1 else "account"
    total = sum(shares.values())
    if total >= a["score"]:  # the CHANGED aspects' change seen along it reaches its whole score, or more
        along = f"{total:.2f}" + (" = " + " + ".join(f"{v:.2f}" for v in shares.values()) if len(shares) > 1 else "")
        return f"{names} {verb} for all of its {a['score']:.2f} (the change along it: {along})"
    return f"{names} {verb} for {total:.2f} of its {a['score']:.2f}" + (f" ({each})" if len(shares) > 1 else "")


def not_changed_reason(a: dict | AspectScore) -> str:
    """Why an aspect is not CHANGED, true for that aspect: within its null, or above it but not needed by the
    joint fit (and which CHANGED aspects account for its score)."""
    a = a if isinstance(a, dict) else asdict(a)
    if a["changed"]:
        raise ValueError(f"{a['aspect']} is CHANGED")
    if a["threshold"] is None:
        return "not tested (no null)"
    low = a["interval"][0]
    if low <= a["threshold"]:
        return f"within what the base varies with other seeds (low {low:.3f} <= null {a['threshold']:.3f})"
    joint = a.get("joint_interval")
    if joint is None:
        return f"above its null (low {low:.3f} > {a['threshold']:.3f}); {accounted_text(a)}"
    return (
        f"above its null (low {low:.3f} > {a['threshold']:.3f}), not needed by the joint fit (low "
        f"{joint[0]:.3f} <= {a['joint_threshold']:.3f}); {accounted_text(a)}"
    )


def format_explanation(expl: dict, top: int | None = None) -> str:
    """A readable table of an explanation dict: one row per aspect, in the explanation's order; the CHANGED rule
    and, for each aspect above its null but not CHANGED, why."""
    conf = expl.get("settings", {}).get("confidence", 0.9)
    joint = any(a.get("joint_score") is not None for a in expl["aspects"])  # two-part methods (finexl)
    lines = [
        f"{'aspect':<12} {'group':<12} {'score':>6}  {int(conf * 100)}% interval   {'null':>5}  "
        + ("joint  j-low  j-null  " if joint else "")
        + f"{'change':<8} toward"
    ]
    for row in expl["aspects"][:top]:
        lo, hi = row["interval"]
        thr = "" if row["threshold"] is None else f"{row['threshold']:.3f}"
        change = "CHANGED" if row["changed"] else ("-" if row["threshold"] is not None else "?")
        joint_cell = ""
        if joint:
            j_low = "" if row.get("joint_interval") is None else f"{row['joint_interval'][0]:.3f}"
            j_thr = "" if row.get("joint_threshold") is None else f"{row['joint_threshold']:.3f}"
            joint_cell = f"{row['joint_score']:.3f}  {j_low:>5}  {j_thr:>6}  "
        lines.append(
            f"{row['aspect']:<12} {row['group']:<12} {row['score']:6.3f}  [{lo:.3f}, {hi:.3f}]   {thr:>5}  "
            f"{joint_cell}{change:<8} {row['toward']}"
        )
    tested = any(a["threshold"] is not None for a in expl["aspects"])
    if tested:
        lines.extend(textwrap.wrap(changed_rule(conf, joint), 119))
    if joint:
        lines.append("joint: the joint fit's score; j-low: its interval's low end; j-null: its null threshold")
    above = [
        a
        for a in expl["aspects"][:top]
        if not a["changed"] and a["threshold"] is not None and a["interval"][0] > a["threshold"]
    ]
    if above:
        lines.append(
            "above their null but not CHANGED, as the joint fit does not need them (j-low <= j-null):"
            if joint
            else "above their null but not CHANGED:"
        )
        lines.extend(f"  {a['aspect']:<12} {accounted_text(a)}" for a in above)
    res = expl["residual"]
    lines.append("")
    changed = [a["aspect"] for a in expl["aspects"] if a["changed"]]
    if changed:
        lines.append(f"changed: {', '.join(changed)}")
    elif tested:
        lines.append("no significant change: no aspect passes the rule above")
    low, high = res["interval"]
    n_pairs = expl["divergence"]["n_pairs"]
    seq = expl.get("sequential")
    if seq:
        how = "every verdict settled" if seq["stopped"] == "settled" else "the cap"
        lines.append(f"samples auto: {n_pairs} of at most {seq['cap']} pairs ({how}; error rate {seq['error']})")
    if res["value"] is None:
        lines.append(f"({n_pairs} pairs, method {expl['method']}: no residual, it scores concepts one by one)")
    else:
        lines.append(
            f"unexplained part of the divergence: {res['value']:.3f} [{low:.3f}, {high:.3f}]   ({n_pairs} pairs, "
            f"method {expl['method']})"
        )
    return "\n".join(lines)


def sweep_order(sweep: dict) -> list[tuple[str, dict]]:
    """A sweep's aspects, the earliest onset first (none last), then by the score at the largest scale."""
    return sorted(
        sweep["aspects"].items(),
        key=lambda item: (item[1]["onset"] is None, item[1]["onset"] or 0, -item[1]["score"][-1]),
    )


STACK_VERDICT_ORDER = {"new": 0, "strengthened": 1, "weakened": 1, "additive": 2, "none": 3}


def stack_order(stack: dict) -> list[tuple[str, dict]]:
    """A stack's aspects, those with a verdict first, then by the stack's move."""
    return sorted(
        stack["aspects"].items(),
        key=lambda item: (STACK_VERDICT_ORDER[item[1]["verdict"]], -abs(item[1]["stack"])),
    )


def format_sweep(sweep: dict, top: int | None = None) -> str:
    """A weight sweep as a table: each aspect's score per scale (``*`` where CHANGED), its onset and whether it
    grows steadily; aspects by their onset, the earliest first."""
    scales = sweep["scales"]
    head = "".join(f"{s:>9g}" for s in scales)
    lines = [
        f"weight sweep: score at each LoRA scale (* CHANGED), {', '.join(map(str, sweep.get('pairs', [])))} pairs"
    ]
    lines.append(f"{'aspect':<12}{head}   onset   steady")
    for name, row in sweep_order(sweep)[:top]:
        cells = "".join(
            f"{score:>8.3f}{'*' if changed else ' '}"
            for score, changed in zip(row["score"], row["changed"], strict=True)
        )
        onset = "-" if row["onset"] is None else f"{row['onset']:g}"
        lines.append(f"{name:<12}{cells}   {onset:>5}   {'yes' if row['steady'] else 'no'}")
    lines.append(
        "onset: the smallest scale at which the aspect is CHANGED; steady: each next score reaches the lower end "
        "of the interval before it"
    )
    return "\n".join(lines)


def format_stack(stack: dict, top: int | None = None) -> str:
    """A stack against its LoRAs alone: per aspect, the move along it under the stack, under each LoRA alone, their
    sum, the interaction (stack minus sum) with its interval, and the verdict; aspects with a verdict first."""
    names = [
        Path(x["lora"]).parent.name if Path(x["lora"]).name.endswith(".safetensors") else x["lora"]
        for x in stack["loras"]
    ]
    alone = "".join(f"{n[:10]:>11}" for n in names)
    lines = [f"the stack against its LoRAs alone ({stack['pairs']} pairs; moves along each aspect, CLIP units)"]
    level = f"{int(stack['confidence'] * 100)}% interval"
    lines.append(f"{'aspect':<12}{'stack':>9}{alone}{'sum':>9}  {'stack - sum':>12}  {level:<20} verdict")
    rows = stack_order(stack)
    for name, r in rows[:top]:
        cells = "".join(f"{m:>11.4f}" for m in r["alone"])
        lo, hi = r["interval"]
        span = f"[{lo:+.4f}, {hi:+.4f}]"
        lines.append(
            f"{name:<12}{r['stack']:>9.4f}{cells}{r['sum']:>9.4f}  {r['interaction']:>+12.4f}  "
            f"{span:<20} {r['verdict']}"
        )
    lines.append(
        "additive: the interval holds 0; strengthened / weakened: the stack moves further / less than the sum; new: "
        "strengthened where no LoRA alone is CHANGED; none: CHANGED nowhere"
    )
    return "\n".join(lines)


def format_trigger(expl: dict, top: int | None = None) -> str:
    """With the trigger and without it, side by side: each aspect's score, interval and verdict."""
    trigger = expl["trigger"]
    leak = trigger["leak"]
    lines = [
        f"trigger {trigger['word']!r} ({trigger['source']}): with it ({trigger['example']['with']!r}) and without it "
        f"({trigger['example']['without']!r}), the same base images"
    ]
    lines.append(f"{'aspect':<12} {'with trigger':<30} {'without (leak)':<30}")
    for a in expl["aspects"][:top]:
        w, o = a, leak[a["aspect"]]

        def cell(r):
            mark = "CHANGED" if r["changed"] else "-"
            return f"{r['score']:.3f} [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] {mark}"

        lines.append(f"{a['aspect']:<12} {cell(w):<30} {cell(o):<30}")
    leaked = trigger["leaked"]
    lines.append(
        f"leaks without the trigger: {', '.join(leaked)}" if leaked else "no aspect changes without the trigger"
    )
    return "\n".join(lines)
