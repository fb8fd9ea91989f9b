"""Several raters' labels of one labeling task: checked together, their agreement, and a consensus.

Each rater's file holds lines of the label format (:mod:`finexl.bench.labels`) with the rater's id and the task's
digest. An answer is read as a signed level (-3 strong decrease ... 0 no change ... 3 strong increase).

* Agreement on the level: Krippendorff's alpha for ordinal data (the ``krippendorff`` package) over the signed
  levels, with the units (a model's aspect) rated by at least two raters; a rater may leave answers out.
* Agreement on "changed or not": Fleiss' kappa (statsmodels) over the units every rater answered.
* Intervals: percentile intervals over bootstrap resamples of the units (:mod:`finexl.stats`).
* Consensus of a unit (:func:`finexl.bench.labels.consensus_of`): changed or not by majority, the direction by
  majority, the level the median of the changed answers (rounded down); an even split is marked ``tie`` and read as
  no change. With it, the number of raters and each rater's answer (``votes``), so that a rater's agreement with
  the others' consensus (the ceiling of :mod:`finexl.bench.labels`) can be computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finexl.bench.labels import DIRECTIONS, Label, LabelError, consensus_of, read_labels, write_labels
from finexl.stats import bootstrap_indices, percentile_interval


@dataclass
class RaterFile:
    path: Path
    rater: str
    task: str
    labels: list[Label]


@dataclass
class Merged:
    """What :func:`merge` found: the raters, the units, agreement overall and per aspect, and the consensus."""

    raters: list[str]
    task: str
    units: list[tuple[str, str]]  # (model, aspect)
    missing: dict[str, int]  # rater -> units of the task left unanswered
    agreement: dict[str, dict]  # "overall" and each aspect -> {"alpha": {...}, "kappa": {...}, "units": n}
    consensus: list[Label] = field(default_factory=list)


def read_rater_file(path: str | Path, task_units: set[tuple[str, str]] | None = None) -> RaterFile:
    """A rater's labels; every line must name the same rater and task, and (given the task's units) a model and
    aspect of the task. Errors name the file and line."""
    path = Path(path)
    labels = read_labels(path)
    lines = _line_numbers(path)
    first = labels[0]
    if first.rater is None or first.task is None:
        raise LabelError(f"{path}:{lines[0]}: a rater's label needs 'rater' and 'task' (the export of label.html)")
    for label, number in zip(labels, lines, strict=True):
        if (label.rater, label.task) != (first.rater, first.task):
            raise LabelError(
                f"{path}:{number}: rater {label.rater!r} of task {label.task!r}; the file began with rater "
                f"{first.rater!r} of task {first.task!r}"
            )
        if task_units is not None and (label.model, label.aspect) not in task_units:
            raise LabelError(f"{path}:{number}: model {label.model!r}, aspect {label.aspect!r} is not in the task")
    return RaterFile(path, first.rater, first.task, labels)


def _line_numbers(path: Path) -> list[int]:
    return [i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]


def _alpha(data: np.ndarray) -> float | None:
    """Krippendorff's ordinal alpha of a (raters, units) array with NaN for no answer; None where it is undefined
    (fewer than two answered units, or a single value throughout)."""
    import krippendorff

    rated = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = rated[~np.isnan(rated)]
    if rated.shape[1] < 2 or len(np.unique(values)) < 2:
        return None
    value = krippendorff.alpha(reliability_data=rated, level_of_measurement="ordinal", value_domain=list(range(-3, 4)))
    return None if not math.isfinite(value) else float(value)


def _kappa(data: np.ndarray) -> float | None:
    """Fleiss' kappa on changed (non-zero) or not, over the units every rater answered; None where undefined."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    complete = data[:, ~np.isnan(data).any(axis=0)]
    if complete.shape[1] < 2 or complete.shape[0] < 2:
        return None
    changed = (complete != 0).astype(int).T  # (units, raters)
    table, _ = aggregate_raters(changed, n_cat=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = fleiss_kappa(table, method="fleiss")
    return None if not math.isfinite(value) else float(value)


def _with_interval(statistic, data: np.ndarray, n_resamples: int, confidence: float, seed: int) -> dict:
    value = statistic(data)
    if value is None:
        return {"value": None, "interval": None}
    draws = [
        statistic(data[:, idx]) for idx in bootstrap_indices(np.random.default_rng(seed), data.shape[1], n_resamples)
    ]
    draws = [d for d in draws if d is not None]
    if len(draws) < n_resamples / 2:  # most resamples had no variation to measure
        return {"value": value, "interval": None}
    low, high = percentile_interval(np.array(draws), confidence)
    return {"value": value, "interval": [float(low), float(high)]}


def agreement(data: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Krippendorff's ordinal alpha and Fleiss' kappa of a (raters, units) array of signed levels (NaN: no
    answer), each with a bootstrap interval over the units."""
    return {
        "units": int(data.shape[1]),
        "alpha": _with_interval(_alpha, data, n_resamples, confidence, seed),
        "kappa": _with_interval(_kappa, data, n_resamples, confidence, seed + 1),
    }


def merge(
    paths: list[str | Path],
    task_units: list[tuple[str, str]] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Merged:
    """Check the raters' files together (one task, distinct raters, known models and aspects), measure their
    agreement overall and per aspect, and form the consensus of every answered unit."""
    if len(paths) < 2:
        raise LabelError("label merge needs the files of at least two raters")
    allowed = set(task_units) if task_units is not None else None
    files = [read_rater_file(p, allowed) for p in paths]
    for f in files[1:]:
        if f.task != files[0].task:
            line = _line_numbers(f.path)[0]
            raise LabelError(f"{f.path}:{line}: task {f.task!r}, but {files[0].path} is task {files[0].task!r}")
    seen: dict[str, Path] = {}
    for f in files:
        if f.rater in seen:
            line = _line_numbers(f.path)[0]
            raise LabelError(f"{f.path}:{line}: rater {f.rater!r} again (also {seen[f.rater]}); one file per rater")
        seen[f.rater] = f.path
    answered = sorted({(label.model, label.aspect) for f in files for label in f.labels})
    units = sorted(set(task_units)) if task_units is not None else answered
    index = {u: j for j, u in enumerate(units)}
    data = np.full((len(files), len(units)), np.nan)
    for i, f in enumerate(files):
        for label in f.labels:
            data[i, index[(label.model, label.aspect)]] = label.signed
    missing = {f.rater: int(np.isnan(data[i]).sum()) for i, f in enumerate(files)}
    result = {"overall": agreement(data, n_resamples, confidence, seed)}
    for aspect in sorted({a for _, a in units}):
        cols = [j for j, (_, a) in enumerate(units) if a == aspect]
        result[aspect] = agreement(data[:, cols], n_resamples, confidence, seed)
    consensus = []
    for j, (model, aspect) in enumerate(units):
        votes = {f.rater: int(data[i, j]) for i, f in enumerate(files) if not np.isnan(data[i, j])}
        if not votes:
            continue
        signed, tie = consensus_of(votes)
        consensus.append(
            Label(
                model,
                aspect,
                DIRECTIONS[int(np.sign(signed))],
                abs(signed),
                "",
                None,
                files[0].task,
                len(votes),
                tie,
                votes,
            )
        )
    return Merged([f.rater for f in files], files[0].task, units, missing, result, consensus)


def write_consensus(path: str | Path, merged: Merged) -> None:
    write_labels(path, merged.consensus)


def agreement_table(merged: Merged) -> str:
    """The agreement, a line per aspect and one overall."""

    def cell(x: dict) -> str:
        if x["value"] is None:
            return f"{'-':>22}"
        iv = x["interval"]
        return f"{x['value']:6.3f} " + (f"[{iv[0]:6.3f}, {iv[1]:6.3f}]" if iv else f"{'(no interval)':>16}")

    lines = [f"{'aspect':<14} {'units':>5}  {'alpha (ordinal), 95%':>22}  {'kappa (changed), 95%':>22}"]
    for name, a in merged.agreement.items():
        lines.append(f"{name:<14} {a['units']:>5}  {cell(a['alpha']):>22}  {cell(a['kappa']):>22}")
    return "\n".join(lines)
