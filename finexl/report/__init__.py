"""Pages to look at: the report of one explanation, several side by side, and a model-card section.

Everything is made from an explanation folder (``finexl explain --out DIR``): ``DIR/explanation.json`` and, when the
pairs were kept, ``DIR/samples/`` (the pairs as PNG, their change maps in ``maps.npz``). Pages are rendered with
Jinja2 templates (``finexl/report/templates``) into one self-contained HTML file each: images inlined as data URIs,
charts as inline SVG, no script and no request to anywhere.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from finexl import __version__
from finexl.errors import InputError, MissingInputError, OutputError
from finexl.explanation.result import (
    SAMPLES_DIR,
    AspectScore,
    Explanation,
    Samples,
    accounted_text,
    changed_rule,
    not_changed_reason,
    stack_order,
    sweep_order,
)
from finexl.narrate.narrator import narrate
from finexl.report.images import data_uri, heat, overlay, png_bytes, scaled, strip
from finexl.utils import atomic_write_bytes, atomic_write_text

REPORT_FILE = "report.html"
CARD_FILE = "card.md"
CARD_STRIP = "card_strip.png"
PAIRS_IN_VIEW = 8  # pairs shown at first; the rest open with a click
OVERLAYS_PER_ASPECT = 4
CHART_WIDTH = 400  # SVG units of the [0, 1] score axis


@dataclass
class Loaded:
    folder: Path
    explanation: Explanation
    samples: Samples | None


def load_folder(folder: str | Path) -> Loaded:
    """An explanation folder, checked: one line naming the file and what is wrong if it is not complete."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"explanation folder {folder} does not exist")
    path = folder / "explanation.json"
    if not path.is_file():
        raise MissingInputError(f"{path} is missing: not an explanation folder, or finexl explain did not finish")
    explanation = Explanation.from_json(path)
    samples = Samples.load(folder / SAMPLES_DIR) if (folder / SAMPLES_DIR).exists() else None
    return Loaded(folder, explanation, samples)


def _environment(markdown: bool = False):
    """The pages' templates. HTML ones (``*.html.j2``) are autoescaped; with ``markdown`` (the card) every printed
    value goes through :func:`markdown_text`. No value a user or a file supplied becomes markup in either."""

    loader = PackageLoader("finexl.report", "templates")
    if markdown:
        return Environment(
            loader=loader,
            autoescape=False,
            finalize=markdown_text,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return Environment(loader=loader, autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")


def markdown_text(value) -> str:
    """``value`` as Markdown text that renders as itself: HTML's ``& < >`` as entities (Markdown passes raw HTML
    through), Markdown's own punctuation backslash-escaped, line breaks as spaces (a value is one table cell)."""

    if isinstance(value, Markup):  # finexl's own text (a file name it chose): as it is
        return str(value)
    text = html.escape(str(value), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def _write(path: Path, text: str, overwrite: bool) -> Path:

    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    atomic_write_text(path, text)
    return path


def model_name(e: Explanation) -> str:
    p = e.models.get("personalized", {})
    source = p.get("lora") or p.get("model") or "personalized model"
    name = Path(source).name or source
    scale = p.get("scale", 1.0)
    return name if p.get("model") or scale == 1.0 else f"{name} at scale {scale:g}"


def verdict(e: Explanation) -> str:
    n = e.divergence.get("n_pairs")
    changed = [a for a in e.aspects if a.changed]
    if changed:
        parts = ", ".join(f"{a.aspect} (toward {a.toward}, {a.score:.2f})" for a in changed)
        return f"Changes {parts}: {len(changed)} of {len(e.aspects)} aspects, from {n} image pairs."
    if all(a.threshold is None for a in e.aspects):
        return f"Scores only: the null test was not run, so no aspect is called changed ({n} image pairs)."
    return f"No significant change: no aspect beats what the base reaches against itself ({n} image pairs)."


def sentences(e: Explanation) -> list[str]:
    if e.sentences and e.sentences.get("text"):
        text = e.sentences["text"]
    else:
        text = narrate(e.to_dict()).text
    return [line.strip().lstrip("-• ").strip() for line in text.splitlines() if line.strip()]


def axis_x(value: float) -> float:
    """Position of a score on the SVG axis."""
    return round(max(0.0, min(1.0, value)) * CHART_WIDTH, 1)


def chart_rows(e: Explanation) -> list[dict]:
    """Every aspect, CHANGED first (the explanation's order), with its numbers and SVG positions."""
    return [
        {
            "aspect": a.aspect,
            "group": a.group,
            "score": a.score,
            "low": a.interval[0],
            "high": a.interval[1],
            "threshold": a.threshold,
            "changed": a.changed,
            "toward": a.toward,
            "direction": a.direction,
            "x_score": axis_x(a.score),
            "x_low": axis_x(a.interval[0]),
            "x_high": axis_x(a.interval[1]),
            "x_threshold": None if a.threshold is None else axis_x(a.threshold),
            "joint": a.joint_score,
            "joint_low": a.joint_interval[0] if a.joint_interval else None,
            "joint_high": a.joint_interval[1] if a.joint_interval else None,
            "joint_threshold": a.joint_threshold,
            "why": "" if a.changed else not_changed_reason(a),
            "above_null": a.above_null,
        }
        for a in e.aspects
    ]


SWEEP_W, SWEEP_H, SWEEP_PAD = 220, 90, 14  # one aspect's curve in a weight sweep


def sweep_charts(e: Explanation) -> list[dict]:
    """A weight sweep's curves, one small chart per aspect (the earliest onset first): the score at each scale
    with its interval as a band, CHANGED scales marked, SVG coordinates computed here."""
    if not e.sweep:
        return []
    scales = e.sweep["scales"]
    lo_s, hi_s = min(scales), max(scales)

    def x(s: float) -> float:
        return round(SWEEP_PAD + (s - lo_s) / (hi_s - lo_s) * (SWEEP_W - 2 * SWEEP_PAD), 1)

    def y(v: float) -> float:
        return round(SWEEP_H - SWEEP_PAD - max(0.0, min(1.0, v)) * (SWEEP_H - 2 * SWEEP_PAD), 1)

    charts = []
    for name, row in sweep_order(e.sweep):  # the earliest onset first
        points = [(x(s), y(v)) for s, v in zip(scales, row["score"], strict=True)]
        upper = [(x(s), y(i[1])) for s, i in zip(scales, row["interval"], strict=True)]
        lower = [(x(s), y(i[0])) for s, i in zip(scales, row["interval"], strict=True)]
        charts.append(
            {
                "aspect": name,
                "line": " ".join(f"{px},{py}" for px, py in points),
                "band": " ".join(f"{px},{py}" for px, py in upper + lower[::-1]),
                "marks": [
                    {"x": px, "y": py, "changed": c, "scale": s, "score": v}
                    for (px, py), c, s, v in zip(points, row["changed"], scales, row["score"], strict=True)
                ],
                "ticks": [{"x": x(s), "label": f"{s:g}"} for s in scales],
                "onset": row["onset"],
                "steady": row["steady"],
            }
        )
    return charts


def stack_rows(e: Explanation) -> dict | None:
    """A stack against its LoRAs alone (``Explanation.stack``): the LoRAs and one row per aspect, verdicts first."""
    if not e.stack:
        return None
    rows = stack_order(e.stack)
    return {
        "loras": e.stack["loras"],
        "pairs": e.stack["pairs"],
        "rows": [{"aspect": name, **r} for name, r in rows],
    }


def trigger_rows(e: Explanation) -> dict | None:
    """With the trigger and without it (``Explanation.trigger``), one row per aspect in the explanation's order."""
    if not e.trigger:
        return None
    leak = e.trigger["leak"]
    rows = [{"aspect": a.aspect, "with": a, "without": leak[a.aspect]} for a in e.aspects if a.aspect in leak]
    return {**{k: v for k, v in e.trigger.items() if k != "leak"}, "rows": rows}


def rule(e: Explanation) -> str:
    """The CHANGED rule of this explanation, as computed."""
    return changed_rule(e.settings.get("confidence", 0.9), any(a.joint_score is not None for a in e.aspects))


def accounted_line(a: AspectScore) -> str:
    """An aspect above its null but not CHANGED, with the CHANGED aspects that account for its score."""
    return f"{a.aspect} ({accounted_text(asdict(a))})"


_UNKNOWN = {"path": "unknown", "fingerprint": "unknown", "lora": None, "model": None, "scale": 1.0, "name": "unknown"}


def provenance(e: Explanation) -> tuple[dict, dict]:
    """The models and the concept bank as the pages show them, every part present (an explanation written by
    another tool, or an old one, may lack some: they show as unknown)."""
    models = {part: {**_UNKNOWN, **(e.models.get(part) or {})} for part in ("base", "personalized", "clip")}
    bank = {"name": "unknown", "n_concepts": "?", "digest": "unknown", **e.concept_bank}
    return models, bank


def residual_line(e: Explanation) -> str:
    r = e.residual
    if r.get("value") is None:
        return f"Method {e.method} scores concepts one by one; it has no unexplained part to report."
    low, high = r["interval"]
    return (
        f"Unexplained: {r['value']:.0%} of the length of the mean change (interval {low:.0%} to {high:.0%}) is "
        "not accounted for by any aspect of the concept bank."
    )


def _pairs(samples: Samples) -> list[dict]:

    return [
        {
            "base": data_uri(samples.base[j]),
            "tuned": data_uri(samples.tuned[j]),
            "prompt": samples.prompts[j],
            "seed": samples.seeds[j],
            "pair": samples.index[j],
        }
        for j in range(len(samples.index))
    ]


def _maps(e: Explanation, samples: Samples) -> list[dict]:

    out = []
    for a in e.aspects:
        if not a.changed or a.aspect not in samples.maps:
            continue
        moves = np.asarray(samples.moves.get(a.aspect, [0.0] * len(samples.index)))
        top = list(np.argsort(-moves, kind="stable")[:OVERLAYS_PER_ASPECT])
        out.append(
            {
                "aspect": a.aspect,
                "toward": a.toward,
                "n_mean": samples.n_mean,
                "mean": data_uri(heat(scaled(samples.mean_maps[a.aspect]))),
                "overlays": [
                    {
                        "uri": data_uri(overlay(samples.tuned[j], samples.maps[a.aspect][j])),
                        "tuned": data_uri(samples.tuned[j]),
                        "prompt": samples.prompts[j],
                        "seed": samples.seeds[j],
                    }
                    for j in top
                ],
            }
        )
    return out


def render_report(e: Explanation, samples: Samples | None) -> str:
    """The HTML of one explanation's report."""

    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=model_name(e),
            verdict=verdict(e),
            sentences=sentences(e),
            rows=chart_rows(e),
            sweep=sweep_charts(e),
            stack=stack_rows(e),
            trigger=trigger_rows(e),
            sweep_size=(SWEEP_W, SWEEP_H),
            width=CHART_WIDTH,
            rule=rule(e),
            joint=any(a.joint_score is not None for a in e.aspects),
            residual=residual_line(e),
            method=e.method,
            divergence=e.divergence,
            pairs=_pairs(samples) if samples is not None else [],
            in_view=PAIRS_IN_VIEW,
            maps=_maps(e, samples) if samples is not None else [],
            settings=json.dumps(e.settings, indent=1, sort_keys=True, default=str),
            models=provenance(e)[0],
            seconds=e.seconds,
            bank=provenance(e)[1],
            made_with=e.finexl_version or "unknown",
            version=__version__,
            confidence=int(round(100 * e.settings.get("confidence", 0.9))),
        )
    )


def write_report(folder: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the report of an explanation folder; returns its path. The folder's own page (``folder/report.html``,
    no ``out``) is made from the folder's files and is always made again; another ``out`` that exists is replaced
    only with ``overwrite``."""
    loaded = load_folder(folder)
    path = Path(out) if out else loaded.folder / REPORT_FILE
    return _write(path, render_report(loaded.explanation, loaded.samples), overwrite or out is None)


COLOURS = ("#c2410c", "#1d4ed8", "#15803d", "#7e22ce", "#b45309", "#0e7490", "#be185d", "#4d7c0f")


def check_comparable(loaded: list[Loaded]) -> None:
    """Scores made with different concept banks or CLIPs are not on one scale: refused with the reason."""
    first = loaded[0]
    for other in loaded[1:]:
        for what, get in (
            ("concept bank", lambda e: e.concept_bank.get("digest")),
            ("CLIP", lambda e: e.models.get("clip", {}).get("fingerprint")),
        ):
            a, b = get(first.explanation), get(other.explanation)
            if a != b:
                raise InputError(
                    f"{other.folder} was explained with another {what} ({b}) than {first.folder} ({a}): their "
                    "scores are not on one scale; explain both with the same one"
                )


def render_compare(loaded: list[Loaded]) -> str:

    check_comparable(loaded)
    models = [
        {
            "name": model_name(x.explanation),
            "folder": x.folder.name,
            "colour": COLOURS[i % len(COLOURS)],
            "verdict": verdict(x.explanation),
        }
        for i, x in enumerate(loaded)
    ]
    order = []  # aspects in order of their best score, CHANGED anywhere first
    by_model = [{a.aspect: a for a in x.explanation.aspects} for x in loaded]
    names = {a for m in by_model for a in m}

    def key(name: str) -> tuple:
        return (
            not any(m[name].changed for m in by_model if name in m),
            -max(m[name].score for m in by_model if name in m),
        )

    for name in sorted(names, key=key):
        entries = []
        for i, m in enumerate(by_model):
            a = m.get(name)
            if a is None:
                continue
            entries.append(
                {
                    "model": i,
                    "colour": models[i]["colour"],
                    "score": a.score,
                    "low": a.interval[0],
                    "high": a.interval[1],
                    "changed": a.changed,
                    "threshold": a.threshold,
                    "toward": a.toward,
                    "joint": a.joint_score,
                    "joint_threshold": a.joint_threshold,
                    "joint_low": a.joint_interval[0] if a.joint_interval else None,
                    "why": "" if a.changed or not a.above_null else not_changed_reason(a),
                    "x_score": axis_x(a.score),
                    "x_low": axis_x(a.interval[0]),
                    "x_high": axis_x(a.interval[1]),
                }
            )
        order.append({"aspect": name, "entries": entries})
    return (
        _environment()
        .get_template("compare.html.j2")
        .render(
            models=models,
            aspects=order,
            width=CHART_WIDTH,
            version=__version__,
            rule=rule(loaded[0].explanation),
            bank=provenance(loaded[0].explanation)[1],
            clip=provenance(loaded[0].explanation)[0]["clip"],
        )
    )


def write_compare(folders: list[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Several explanations side by side on one page (``out``); refuses ones made with other banks or CLIPs."""
    if len(folders) < 2:
        raise InputError("compare needs at least two explanation folders")
    loaded = [load_folder(f) for f in folders]
    seen: dict[Path, str] = {}
    for x in loaded:
        if x.folder.resolve() in seen:
            raise InputError(f"{x.folder} is given twice")
        seen[x.folder.resolve()] = ""
    return _write(Path(out), render_compare(loaded), overwrite)


def model_card(folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``folder/card.md`` (a section to paste into a model card) and its image strip ``card_strip.png``."""

    loaded = load_folder(folder)
    e, samples = loaded.explanation, loaded.samples
    path = loaded.folder / CARD_FILE
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    has_strip = samples is not None and len(samples.index) > 0
    if has_strip:
        k = min(4, len(samples.index))
        atomic_write_bytes(loaded.folder / CARD_STRIP, png_bytes(strip(samples.base[:k], samples.tuned[:k]), 1024))
    n_prompts = len(dict.fromkeys(samples.prompts)) if samples is not None else None
    text = (
        _environment(markdown=True)
        .get_template("card.md.j2")
        .render(
            name=model_name(e),
            verdict=verdict(e),
            changed=[a for a in e.aspects if a.changed],
            within=[a.aspect for a in e.aspects if not a.changed and not a.above_null],
            accounted=[accounted_line(a) for a in e.aspects if not a.changed and a.above_null],
            rule=rule(e),
            e=e,
            strip=Markup(CARD_STRIP) if has_strip else None,
            models=provenance(e)[0],
            bank=provenance(e)[1],
            strip_pairs=min(4, len(samples.index)) if has_strip else 0,
            n_prompts=n_prompts,
            version=__version__,
            confidence=int(round(100 * e.settings.get("confidence", 0.9))),
            residual=residual_line(e),
        )
    )
    return _write(path, text, overwrite=True)
