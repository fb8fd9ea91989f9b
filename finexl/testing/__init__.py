"""Helpers for tests and scripts, not used by the library: real architectures built from their published configs
with random weights (:mod:`~finexl.testing.architectures`).
"""
