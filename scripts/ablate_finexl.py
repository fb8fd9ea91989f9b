"""Ablate finexl's two-part default on the benchmark suites: each part alone against the whole.

* ``finexl``: the default (projection on concept axes for how much, bagged signed OMP for whether and toward what);
* ``joint-only``: the signed OMP joint fit alone (its weights are the scores; one fit, no bagging);
* ``projection-only``: the projection on the concept axes alone (GSCLIP's scorer on axes instead of raw phrases).

Builds nothing: run `finexl bench build single|null|multi|dreambooth` first. Runs on the same cached images and
embeddings as `finexl bench run` and prints the benchmark's Markdown table for the three.

    python scripts/ablate_finexl.py --suites runs/suites --cache runs/cache --json docs/results/ablation.json
"""

from __future__ import annotations

import argparse
import logging

from finexl.bench.metrics import all_metrics, markdown_table
from finexl.bench.runner import BenchConfig, load_truths, run_models
from finexl.explanation.decompose import ESTIMATORS, GSCLIPScorer, SignedOMP, one_sided
from finexl.utils import atomic_write_json


class ProjectionOnly(GSCLIPScorer):
    """The default's projection alone: on a one-sided axis (a value without an antonym) only a move toward it."""

    design = "axes"

    def fit(self, F, D, reference=None, two_sided=None):
        super().fit(F, D, reference)
        self.coef_ = one_sided(self.coef_, two_sided)
        return self


ABLATIONS = {"joint-only": SignedOMP, "projection-only": ProjectionOnly}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="runs/suites")
    ap.add_argument("--names", default="single,null,multi,dreambooth")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ESTIMATORS.update(ABLATIONS)  # visible to make_estimator for this process only
    methods = ["finexl", *ABLATIONS]
    cfg = BenchConfig(methods=tuple(methods), cache_dir=args.cache)
    records = run_models(load_truths(args.suites, args.names.split(",")), cfg)
    metrics = all_metrics(records, methods)
    print(markdown_table(metrics, methods))
    if args.json:
        atomic_write_json(args.json, {"metrics": metrics, "methods": methods})


if __name__ == "__main__":
    main()
