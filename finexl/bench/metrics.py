"""Metrics of explanations against ground truth, per method, on benchmark records (see :mod:`.runner`).

* ``level_mae``: the paper's metric: within each single-aspect family (one suite, one aspect, 5 levels), rank the
  models by the method's score for that aspect and average |rank - true level| (0 is perfect; random is 1.6 for 5
  levels; tied scores share their average rank, so scoring a whole family alike gives 1.2, not the levels' order);
* ``spearman``: Spearman(score, level) per aspect, and their mean;
* ``spearman_judge``: Spearman(score, measured change) per aspect, and their mean: the level replaced by what the
  judge reads on the same images (``judge_shift``), for levels that a LoRA realized out of order;
* ``top1`` / ``top3``: the shifted aspect is first / among the first three of the explanation's ranking;
* ``top1_judge``: the explanation's first aspect is the one the judge reads moving most (``judge_top_aspects``):
  top-1 against the measured ground truth, which differs from the spec's where a LoRA's side effect outgrows its
  shifted aspect. ``_top1_of_judge`` is how often the judge itself ranks the shifted aspect first: the ``top1``
  that an explanation reporting exactly what the judge measured would get;
* ``precision`` / ``recall`` / ``f1`` of (aspect, direction) pairs reported as changed, against what changed on
  single-aspect, mixture and null models (``truth``, :func:`truth_of`): by default the aspects the judge reads moving
  past its own null (the base's images on other seeds, 95 %), toward the value or the side it reads; ``spec`` (the
  shifted aspects, what the tables used before issue 37) and ``fixed`` (the judge's change above a fixed 0.10) are
  kept for comparison;
* ``direction``: share of single-aspect models whose shifted aspect is reported in the right direction;
* ``multi_selection``: for each mixture model, pick among all mixtures the spec whose strength vector is closest
  (cosine) to the explanation's score vector; share picked right (a tie for closest earns the share of the tied
  specs that is right, so that no result depends on the order of the models or of the aspects). The same pick made
  from the judge's own readings of what changed (``judge_multi_selection``) shows how far the built models realize
  their specs' proportions: an explanation that reported exactly what changed would score that;
* ``retrieval``: for each single-aspect model, its nearest other single-aspect model by cosine of the signed score
  vectors has the same shifted aspect and direction (same-spec retrieval; ties as in ``multi_selection``);
* ``null_fpr``: share of (null model, aspect) checks reported as changed;
* ``dreambooth_recall``: share of a DreamBooth subject's aspects (shape, colour, ...) reported changed toward the
  subject's value, on the instance prompt;
* ``sentence_f1``: F1 of the aspects the templated sentences name as changed, against the same ``truth``.

Every metric is computed from what each unit (a single-aspect family, a mixture, a null, a DreamBooth subject)
contributes (``metric_units``, ``aggregate_units``), so that ``compare_methods`` can resample the units: a paired
bootstrap of the differences between one method and the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

from finexl.errors import ConfigError, InputError
from finexl.narrate.templates import render
from finexl.stats import bootstrap_sample, percentile_interval
from finexl.toyworld.aspects import CATEGORICAL_BY_NAME
from finexl.validation import load_json, validate


def expected_direction(target: str) -> str:
    if target == "less":
        return "decrease"
    if target == "more" or target in sum((a.values for a in CATEGORICAL_BY_NAME.values()), ()):
        return "increase"
    return "increase" if float(target) > 0.5 else "decrease"


def direction_correct(aspect: str, target: str, result: dict) -> bool:
    """Graded: the reported direction. Categorical: an increase toward a phrase naming the target value."""
    if aspect not in CATEGORICAL_BY_NAME:
        return result["direction"] == expected_direction(target)
    words = CATEGORICAL_BY_NAME[aspect].words[target]
    return result["direction"] == "increase" and any(w.lower() in result["toward"].lower() for w in words)


def _signed(method_result: dict, aspects: list[str]) -> np.ndarray:
    out = []
    for a in aspects:
        r = method_result["aspects"][a]
        out.append(r["score"] * (-1.0 if r["direction"] == "decrease" else 1.0))
    return np.array(out)


def _pick_credit(similarities: list[float], right: list[bool]) -> float:
    """Credit for picking the most similar candidate: 1 or 0, or, where several tie for most similar, the share of
    them that is right (what a uniform pick among the tied would score on average), so that no result depends on
    the order of the candidates."""
    best = max(similarities)
    tied = [ok for sim, ok in zip(similarities, right, strict=True) if sim >= best - 1e-9]
    return float(np.mean(tied))


def _spearman(truth: np.ndarray, scores: np.ndarray) -> float:
    """Spearman's rho; 0 for fewer than three models or constant scores (no order to credit)."""
    if len(scores) < 3 or np.ptp(scores) == 0 or np.ptp(truth) == 0:
        return 0.0
    return float(spearmanr(truth, scores)[0])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else -1.0


def judge_top_aspects(r: dict) -> frozenset[str]:
    """The judged aspects that moved most on the model's outputs (several when tied; empty without judge readings):
    a categorical aspect by the largest gain in a value's share, a graded one by the absolute change of its mean
    level (both are fractions of the same images)."""
    moves = {a: (max(v.values()) if isinstance(v, dict) else abs(v)) for a, v in r.get("judge", {}).items()}
    if not moves:
        return frozenset()
    top = max(moves.values())
    return frozenset(a for a, m in moves.items() if m >= top - 1e-9)


def judge_shift(r: dict) -> float | None:
    """How far the judge reads a single-aspect model's shifted aspect moving toward its target: the gain in the
    target value's share (categorical), or the mean level's change signed so that the intended direction is
    positive (graded). None without judge readings."""
    aspect, target, _ = r["shifts"][0]
    reading = r.get("judge", {}).get(aspect)
    if reading is None:
        return None
    if isinstance(reading, dict):
        return float(reading[target])
    return float(reading) * (1.0 if expected_direction(target) == "increase" else -1.0)


def _families(single: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """The single-aspect models grouped into families (one suite, one shifted aspect), each in level order, as
    (key, aspect, models); the key is the aspect, or ``suite/aspect`` when records of several suites are pooled."""
    suites = sorted({r.get("suite", "") for r in single})
    out = []
    for suite in suites:
        for aspect in sorted({r["shifts"][0][0] for r in single if r.get("suite", "") == suite}):
            family = sorted(
                (r for r in single if r.get("suite", "") == suite and r["shifts"][0][0] == aspect),
                key=lambda r: r["level"],
            )
            out.append((aspect if len(suites) == 1 else f"{suite}/{aspect}", aspect, family))
    return out


TRUTHS = ("judge", "spec", "fixed")  # what counts as changed for precision, recall and F1; the first is the default
JUDGE_FIXED_THRESHOLD = 0.10  # ``fixed``: the judge's change that counted as moved before the judge had a null
TRUTH_NAMES = {
    "judge": "the aspects the judge reads moving past its own null (95 %)",
    "spec": "the spec's shifted aspects",
    "fixed": f"the aspects whose judged change exceeds {JUDGE_FIXED_THRESHOLD:g} (no null)",
}


def judge_change(reading) -> tuple[float, str]:
    """How far the judge reads one aspect moving, and toward what: a categorical aspect's largest gain in a value's
    share and that value, a graded aspect's |mean level change| and ``more`` or ``less``."""
    if isinstance(reading, dict):
        top = max(reading, key=reading.get)
        return float(reading[top]), top
    return abs(float(reading)), "less" if reading < 0 else "more"


def truth_of(r: dict, truth: str = "judge") -> dict[str, str]:
    """What changed on a record's model, as ``{aspect: target}`` (a categorical value, ``more`` or ``less``, or a
    spec's target): ``judge``, the aspects whose change clears the judge's null; ``fixed``, those whose change
    exceeds ``JUDGE_FIXED_THRESHOLD``; ``spec``, the spec's shifted aspects."""
    if truth not in TRUTHS:
        raise ConfigError(f"unknown truth {truth!r}; choose from {', '.join(TRUTHS)}")
    if truth == "spec":
        return {a: t for a, t, _ in r["shifts"]}
    if truth == "judge" and "judge_moved" not in r:
        raise InputError(
            f"record {r['id']} has no judge null (made before issue 37): re-run `finexl bench run`, or score it "
            "with --truth spec"
        )
    out = {}
    for aspect, reading in r["judge"].items():
        size, target = judge_change(reading)
        if r["judge_moved"][aspect] if truth == "judge" else size > JUDGE_FIXED_THRESHOLD:
            out[aspect] = target
    return out


def _counts(r: dict, method: str, truth: str) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of the (aspect, direction) pairs a record's explanation
    reports as changed, against what changed (:func:`truth_of`)."""
    res = r["methods"][method]["aspects"]
    changed = truth_of(r, truth)
    tp = fp = 0
    for aspect, x in res.items():
        if x["changed"]:
            if aspect in changed and direction_correct(aspect, changed[aspect], x):
                tp += 1
            else:
                fp += 1
    fn = sum(1 for a, t in changed.items() if not (res[a]["changed"] and direction_correct(a, t, res[a])))
    return tp, fp, fn


def _sentence_counts(r: dict, method: str, truth: str) -> tuple[int, int, int]:
    """(tp, fp, fn) of the aspects that the templated bullet sentences name as changed, against what changed."""

    aspects = [{"aspect": a, **x} for a, x in r["methods"][method]["aspects"].items()]
    text = render({"aspects": aspects}, "bullets")
    named = {line[2:].split(":", 1)[0] for line in text.splitlines() if ":" in line and "unchanged" not in line}
    changed = set(truth_of(r, truth))
    return len(named & changed), len(named - changed), len(changed - named)


# the resampling units of the benchmark, by kind, as a report names them
UNIT_NAMES = {
    "family": "single-aspect families",
    "multi": "mixtures",
    "null": "nulls",
    "dreambooth": "DreamBooth subjects",
}


def metric_units(records: list[dict], method: str, truth: str = "judge") -> dict[str, list[dict]]:
    """What each resampling unit contributes to every metric of ``method``: a single-aspect family (its levels
    together, as they are ranked together), a mixture, a null model, a DreamBooth subject. ``aggregate_units``
    turns them into the metrics; resampling the units is the bootstrap of :func:`compare_methods`. The candidates
    of ``retrieval`` and ``multi_selection`` are always all the models of the records: a unit's credit is computed
    once against them."""
    single = [r for r in records if r["kind"] == "single"]
    multi = [r for r in records if r["kind"] == "multi"]
    units: dict[str, list[dict]] = {kind: [] for kind in UNIT_NAMES}

    credits: dict[str, float] = {}  # retrieval credit per single-aspect model, against all the others
    if len(single) > 1:
        aspects = sorted(single[0]["methods"][method]["aspects"])
        vectors = [_signed(r["methods"][method], aspects) for r in single]
        shifted = [r["shifts"][0] for r in single]
        for i, v in enumerate(vectors):
            others = [j for j in range(len(vectors)) if j != i]
            same = [
                shifted[j][0] == shifted[i][0]
                and expected_direction(shifted[j][1]) == expected_direction(shifted[i][1])
                for j in others
            ]
            credits[single[i]["id"]] = _pick_credit([_cos(v, vectors[j]) for j in others], same)

    for key, aspect, family in _families(single):
        models = []
        for r in family:
            x, (_, target, _) = r["methods"][method], r["shifts"][0]
            judged = judge_top_aspects(r)
            models.append(
                {
                    "top1": x["ranking"][0] == aspect,
                    "top3": aspect in x["ranking"][:3],
                    "top1_judge": (x["ranking"][0] in judged) if judged else None,
                    "direction": direction_correct(aspect, target, x["aspects"][aspect]),
                    "retrieval": credits.get(r["id"]),
                    "counts": _counts(r, method, truth),
                    "sentences": _sentence_counts(r, method, truth),
                }
            )
        levels = np.array([r["level"] for r in family], dtype=float)
        scores = np.array([r["methods"][method]["aspects"][aspect]["score"] for r in family])
        measured = [judge_shift(r) for r in family]
        units["family"].append(
            {
                "key": key,
                "models": models,
                "spearman": _spearman(levels, scores),
                "spearman_judge": None if None in measured else _spearman(np.array(measured), scores),
                # tied scores share their average rank: a method that scores a whole family alike gets no credit
                "level_mae": float(np.mean(np.abs(rankdata(scores) - rankdata(levels)))),
            }
        )

    if multi:
        aspects = sorted(multi[0]["methods"][method]["aspects"])
        targets = [_spec_vector(r, aspects) for r in multi]
        for r in multi:
            credit = _pick_credit(
                [_cos(_signed(r["methods"][method], aspects), t) for t in targets],
                [other["spec"] == r["spec"] for other in multi],
            )
            units["multi"].append(
                {
                    "multi_selection": credit,
                    "counts": _counts(r, method, truth),
                    "sentences": _sentence_counts(r, method, truth),
                }
            )
    for r in records:
        if r["kind"] == "null":
            flags = [x["changed"] for x in r["methods"][method]["aspects"].values()]
            units["null"].append(
                {
                    "reported": sum(flags),
                    "checks": len(flags),
                    "counts": _counts(r, method, truth),
                    "sentences": _sentence_counts(r, method, truth),
                }
            )
        elif r["kind"] == "dreambooth":
            res = r["methods"][method]["aspects"]
            found = [res[a]["changed"] and direction_correct(a, t, res[a]) for a, t, _ in r["shifts"]]
            units["dreambooth"].append({"found": sum(found), "items": len(found)})
    return units


def aggregate_units(units: dict[str, list[dict]], draw: dict[str, np.ndarray] | None = None) -> dict:
    """The metrics from :func:`metric_units`; ``draw`` picks (with repeats) which units of each kind count, as a
    bootstrap resample does. Without it every unit counts once, and the per-aspect Spearman dicts are included."""

    def pick(kind):
        return units[kind] if draw is None else [units[kind][i] for i in draw[kind]]

    families, mixtures, nulls, subjects = pick("family"), pick("multi"), pick("null"), pick("dreambooth")
    models = [m for f in families for m in f["models"]]
    out: dict = {}
    if models:
        for name in ("top1", "top3", "direction"):
            out[name] = float(np.mean([m[name] for m in models]))
        if all(m["top1_judge"] is not None for m in models):
            out["top1_judge"] = float(np.mean([m["top1_judge"] for m in models]))
        if draw is None:
            out["spearman"] = {f["key"]: f["spearman"] for f in families}
        out["spearman_mean"] = float(np.mean([f["spearman"] for f in families]))
        if all(f["spearman_judge"] is not None for f in families):
            if draw is None:
                out["spearman_judge"] = {f["key"]: f["spearman_judge"] for f in families}
            out["spearman_judge_mean"] = float(np.mean([f["spearman_judge"] for f in families]))
        out["level_mae"] = float(np.mean([f["level_mae"] for f in families]))
        out["retrieval"] = None if models[0]["retrieval"] is None else float(np.mean([m["retrieval"] for m in models]))
    if mixtures:
        out["multi_selection"] = float(np.mean([m["multi_selection"] for m in mixtures]))
    if models or mixtures or nulls:  # (aspect, direction) pairs; DreamBooth subjects have their own recall
        tp, fp, fn = np.sum([u["counts"] for u in models + mixtures + nulls], axis=0)
        out["precision"] = float(tp / (tp + fp)) if tp + fp else 0.0
        out["recall"] = float(tp / (tp + fn)) if tp + fn else 0.0
        p, rc = out["precision"], out["recall"]
        out["f1"] = 2 * p * rc / (p + rc) if p + rc else 0.0
        tp, fp, fn = np.sum([u["sentences"] for u in models + mixtures + nulls], axis=0)
        out["sentence_f1"] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0
    if nulls:
        out["null_fpr"] = float(sum(u["reported"] for u in nulls) / sum(u["checks"] for u in nulls))
    if subjects:
        out["dreambooth_recall"] = float(sum(u["found"] for u in subjects) / sum(u["items"] for u in subjects))
    return out


def method_metrics(records: list[dict], method: str, truth: str = "judge") -> dict:
    return aggregate_units(metric_units(records, method, truth))


def _spec_vector(r: dict, aspects: list[str]) -> np.ndarray:
    v = np.zeros(len(aspects))
    for a, t, s in r["shifts"]:
        v[aspects.index(a)] = s * (1.0 if expected_direction(t) == "increase" else -1.0)
    return v


def judge_multi_selection(records: list[dict]) -> float | None:
    """``multi_selection`` with the judge as the explanation: each mixture's measured change on the aspects the
    mixtures shift (a graded aspect's level difference; a categorical aspect's change in the share of the value the
    mixtures shift it toward), matched by cosine to every mixture's spec."""
    multi = [r for r in records if r["kind"] == "multi"]
    if not multi:
        return None
    targets = {}
    for r in multi:
        for a, t, _ in r["shifts"]:
            targets.setdefault(a, t)
    aspects = sorted(targets)
    if any(a not in r.get("judge", {}) for r in multi for a in aspects):
        return None  # no judge readings (records not made by the toy benchmark)

    def measured(r):
        return np.array(
            [r["judge"][a][targets[a]] if isinstance(r["judge"][a], dict) else r["judge"][a] for a in aspects]
        )

    specs = [_spec_vector(r, aspects) for r in multi]
    return float(
        np.mean(
            [
                _pick_credit([_cos(measured(r), t) for t in specs], [o["spec"] == r["spec"] for o in multi])
                for r in multi
            ]
        )
    )


def all_metrics(records: list[dict], methods: list[str], truth: str = "judge") -> dict:
    out = {m: method_metrics(records, m, truth) for m in methods}
    by_judge = judge_multi_selection(records)
    if by_judge is not None:
        out["_multi_selection_by_judge"] = by_judge
    single = [r for r in records if r["kind"] == "single"]
    measured = [judge_top_aspects(r) for r in single]
    if single and all(measured):
        out["_top1_of_judge"] = float(np.mean([r["shifts"][0][0] in j for j, r in zip(measured, single, strict=True)]))
    widths = [r["interval_width"] for r in records if "interval_width" in r]
    if widths:
        out["_paired_over_unpaired_interval_width"] = float(
            np.mean([w["paired"] for w in widths]) / np.mean([w["unpaired"] for w in widths])
        )
    return out


COLUMNS = (
    "level_mae",
    "spearman_mean",
    "spearman_judge_mean",
    "top1",
    "top3",
    "top1_judge",
    "direction",
    "precision",
    "recall",
    "f1",
    "multi_selection",
    "retrieval",
    "null_fpr",
    "dreambooth_recall",
    "sentence_f1",
)
LOWER_IS_BETTER = {"level_mae", "null_fpr"}


def markdown_table(metrics: dict, methods: list[str]) -> str:
    cols = [c for c in COLUMNS if any(c in metrics[m] for m in methods)]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in methods:
        cells = []
        for c in cols:
            v = metrics[m].get(c)
            cells.append("" if v is None else f"{v:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_methods(
    records: list[dict],
    methods: list[str],
    reference: str = "finexl",
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    truth: str = "judge",
) -> dict:
    """How sure each column's ordering is: a paired bootstrap over the benchmark's units (single-aspect families,
    mixtures, nulls, DreamBooth subjects; see :func:`metric_units`), every method scored on the same resamples.

    For every column: the reference's value and percentile interval, and for every other method its value and the
    difference (positive where the reference is better, lower-is-better columns flipped) with its interval; the
    verdict is "better" or "worse" where that interval excludes 0, else "tie". Intervals are per pair, not corrected
    for the number of pairs compared.
    """
    if reference not in methods:
        raise ConfigError(f"reference method {reference!r} is not among the methods {methods}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be positive, got {n_resamples}")
    units = {m: metric_units(records, m, truth) for m in methods}
    full = {m: aggregate_units(units[m]) for m in methods}
    sizes = {kind: len(u) for kind, u in units[reference].items()}
    rng = np.random.default_rng(seed)
    draws = [{kind: bootstrap_sample(rng, n) for kind, n in sizes.items()} for _ in range(n_resamples)]
    resampled = {m: [aggregate_units(units[m], d) for d in draws] for m in methods}

    def interval(values):
        return [float(x) for x in percentile_interval(values, level)]

    columns = {}
    for col in COLUMNS:
        if full[reference].get(col) is None:
            continue
        sign = -1.0 if col in LOWER_IS_BETTER else 1.0
        ref = np.array([r[col] for r in resampled[reference]])
        versus = {}
        for m in methods:
            if m == reference or full[m].get(col) is None:
                continue
            diff = sign * (ref - np.array([r[col] for r in resampled[m]]))
            lo, hi = interval(diff)
            verdict = "better" if lo > 0 else "worse" if hi < 0 else "tie"
            versus[m] = {
                "value": full[m][col],
                "difference": sign * (full[reference][col] - full[m][col]) + 0.0,
                "interval": [lo + 0.0, hi + 0.0],
                "verdict": verdict,
            }
        columns[col] = {"value": full[reference][col], "interval": interval(ref), "versus": versus}
    return {
        "reference": reference,
        "resamples": n_resamples,
        "seed": seed,
        "level": level,
        "truth": truth,
        "units": sizes,
        "columns": columns,
    }


def comparison_table(comparison: dict) -> str:
    """Markdown: per column, the reference with its interval, the best other method and the difference to it, and
    the methods the reference is significantly worse or better than (see :func:`compare_methods`)."""
    ref, pct = comparison["reference"], round(100 * comparison["level"])
    lines = [
        f"| metric | {ref} [{pct}% interval] | best other | {ref} - best other [{pct}% interval] | "
        f"{ref} significantly worse than | significantly better than |",
        "|---|---|---|---|---|---|",
    ]
    for col, c in comparison["columns"].items():
        versus = c["versus"]
        if not versus:
            continue
        best = (min if col in LOWER_IS_BETTER else max)(versus, key=lambda m: versus[m]["value"])
        b = versus[best]
        worse = ", ".join(m for m, v in versus.items() if v["verdict"] == "worse") or "-"
        better = sum(v["verdict"] == "better" for v in versus.values())
        lines.append(
            f"| {col} | {c['value']:.3f} [{c['interval'][0]:.3f}, {c['interval'][1]:.3f}] | {best} "
            f"{b['value']:.3f} | {b['difference']:+.3f} [{b['interval'][0]:+.3f}, {b['interval'][1]:+.3f}] "
            f"| {worse} | {better} of {len(versus)} |"
        )
    return "\n".join(lines)


def compare_bench(
    results: str | Path,
    reference: str = "finexl",
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    truth: str | None = None,
) -> dict:
    """:func:`compare_methods` on the records of a ``finexl bench run --json`` file (``truth``: the file's own by
    default, else ``spec``, as every file made before the judge had a null)."""

    obj = load_json(results, "benchmark results")
    if not (isinstance(obj, dict) and obj.get("records")):
        raise InputError(f"{results} holds no per-model records: write it with `finexl bench run ... --json FILE`")
    records = validate(obj, "bench_results", results)["records"]
    if not 0 < level < 1:
        raise ConfigError(f"--level must lie between 0 and 1, got {level}")
    methods = obj.get("config", {}).get("methods") or list(records[0]["methods"])
    truth = truth or obj.get("config", {}).get("truth", "spec")
    return compare_methods(
        records, methods, reference=reference, n_resamples=n_resamples, seed=seed, level=level, truth=truth
    )
