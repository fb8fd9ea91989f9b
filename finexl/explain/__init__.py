"""Explain a personalization: paired sampling, CLIP divergence, concept directions, decomposition with intervals.

The stages follow the data flow of ``DESIGN.md``: :mod:`.paired` (same prompts and noise for both models, cached),
:mod:`.embed` (CLIP image and text encoders), :mod:`.divergence` (per-pair differences, V_div, bootstrap),
:mod:`.concepts` (concept banks and text directions), :mod:`.decompose` (estimators), :mod:`.calibration` (the
base-against-itself null) and :mod:`.explainer`, which wires them into :func:`explain`.
"""
