"""Named sets of defaults. The one preset is ``toy``: the embedded toy world, every part from the data folder.

This module is the one place where a default model, CLIP, concept bank or prompt set is chosen. A run with no base
uses the ``toy`` preset; a run with a base of its own names every part itself (or asks for a preset explicitly),
so a real model is never explained with the toy world's CLIP, concepts or prompts by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finexl.errors import ConfigError
from finexl.loading.pipelines import TOY_BASE
from finexl.toyworld.evaluate import NEUTRAL_PROMPTS
from finexl.utils import data_dir

PRESETS = ("toy",)


@dataclass(frozen=True)
class Preset:
    """The parts a preset supplies for whatever a run leaves unset."""

    name: str
    base: Path  # diffusers pipeline folder
    clip: str  # CLIP spec (see finexl.explanation.embed)
    concepts: str  # concept bank file or shipped bank name
    prompts: tuple[str, ...]  # sampling prompts
    judge: Path  # the toy world's aspect reader (ground truth)


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (only ``toy`` exists)."""

    if name != "toy":
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    root = data_dir()
    return Preset("toy", root / TOY_BASE, "toy", "toy", tuple(NEUTRAL_PROMPTS), root / "toy_judge")


def toy_base() -> Path:
    """The toy world's base pipeline folder: the default of every command that takes ``--base``."""
    return get_preset("toy").base


def resolve_preset(preset: str | None, base: str | Path | None) -> str | None:
    """The preset a run uses: the one asked for; else ``toy`` when no base is given; else none."""
    if preset is not None:
        get_preset(preset)  # validates the name
        return preset
    return "toy" if base is None else None
