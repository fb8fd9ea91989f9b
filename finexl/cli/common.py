"""What the command groups share: argument types that check values, argument groups defined once, output helpers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from finexl.config import add_arguments, from_args
from finexl.errors import ConfigError, InputError
from finexl.sampling import SamplerConfig


def _number(kind, text: str, flag_check, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if not flag_check(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (an argparse type)."""
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "an integer >= 0")


def finite_float(text: str) -> float:
    return _number(float, text, lambda v: True, "a number")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0, "a number > 0")


def nonnegative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0, "a number >= 0")


def common_parser() -> argparse.ArgumentParser:
    """-v / -q, shared by every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details; tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return common


def add_compute_arguments(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (default: torch's choice)")
    if device:
        p.add_argument("--device", default="cpu", help="torch device of the models, e.g. cuda or cuda:1 (default cpu)")


def add_sampler_arguments(p: argparse.ArgumentParser, defaults: SamplerConfig | None = None) -> None:
    """The sampler's flags (``--steps``, ``--guidance-scale``, ``--scheduler``, ``--batch-size``), generated from
    :class:`~finexl.sampling.SamplerConfig`; the help shows ``defaults``' values (explain's:
    ``finexl.explanation.pipeline.EXPLAIN_SAMPLER``), else the dataclass's."""
    add_arguments(p, SamplerConfig, defaults=defaults)


def sampler_config(args: argparse.Namespace, defaults: SamplerConfig | None = None, **size) -> SamplerConfig:
    """The :class:`~finexl.sampling.SamplerConfig` of the flags of :func:`add_sampler_arguments`."""
    return from_args(SamplerConfig, args, defaults, **size)


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def check_output_folder(out: Path, overwrite: bool) -> None:
    if out.is_file():
        raise InputError(f"output folder {out} is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} exists and is not empty; pass --overwrite to replace it")


def parse_list(text: str | None, flag: str) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; ``None`` stays ``None``."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{flag} needs a comma-separated list")
    return names
