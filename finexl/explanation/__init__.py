"""Explain a personalization: paired sampling, CLIP divergence, concept directions, decomposition with intervals.

The stages follow the data flow of ``DESIGN.md``: :mod:`.paired` (same prompts and noise for both models, cached),
:mod:`.proposals` (optional concepts proposed by a vision-language model), :mod:`.embed` (CLIP image and text
encoders), :mod:`.concepts` (concept banks and text directions), :mod:`.decompose` (estimators), :mod:`.scoring`
(scores, bootstrap intervals, the base-against-itself null) and :mod:`.pipeline`, which runs them in order and
returns an :class:`~finexl.explanation.result.Explanation`.
"""
