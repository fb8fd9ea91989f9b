"""What the command groups share: argument types that check values, argument groups defined once, output helpers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from finexl.errors import ConfigError, InputError


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
    return _number(int, text, lambda v: v >= 1, "an integer >= 1")


def samples_arg(text: str) -> int | str:
    """``auto`` or a number of pairs >= 2."""
    if text.strip().lower() == "auto":
        return "auto"
    return _number(int, text, lambda v: v >= 2, "'auto' or an integer >= 2")


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


def add_sampler_arguments(p: argparse.ArgumentParser, defaults=None) -> None:
    """``--steps``, ``--guidance-scale``, ``--scheduler``, ``--batch-size``; their defaults from ``defaults`` (a
    ``SamplerConfig``: explain's is ``finexl.explanation.pipeline.EXPLAIN_SAMPLER``), else ``SamplerConfig()``."""
    from finexl.sampling import SCHEDULERS, SamplerConfig

    defaults = defaults or SamplerConfig()  # the one place of the sampler's defaults
    p.add_argument("--steps", type=positive_int, default=defaults.num_inference_steps,
                   help="sampler steps (default %(default)s)")  # fmt: skip
    p.add_argument("--guidance-scale", type=nonnegative_float, default=defaults.guidance_scale,
                   help="classifier-free guidance (default %(default)s)")  # fmt: skip
    p.add_argument("--scheduler", choices=("default", *SCHEDULERS), default=defaults.scheduler,
                   help="sampler (default %(default)s): 'default' is the pipeline's own; dpm++ (DPM-Solver++ 2M) and "
                        "unipc are multistep solvers for fewer steps, built from the pipeline's scheduler "
                        "config")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                   help="images generated at once (default %(default)s; halved on out-of-memory)")  # fmt: skip


def sampler_config(args: argparse.Namespace, **size):
    """The :class:`~finexl.sampling.SamplerConfig` of the flags of :func:`add_sampler_arguments`."""
    from finexl.sampling import SamplerConfig

    return SamplerConfig(num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                         batch_size=args.batch_size, scheduler=args.scheduler, **size)  # fmt: skip


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def check_output_folder(out: Path, overwrite: bool) -> None:
    if out.is_file():
        raise InputError(f"output folder {out} is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output folder {out} exists and is not empty; pass --overwrite to replace it")


def parse_steps(text: str | None, flag: str) -> tuple[int, ...]:
    """``"50,100,200"`` -> ``(50, 100, 200)``."""
    if not text:
        return ()
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise ConfigError(f"{flag} expects comma-separated step counts like 50,100,200, got {text!r}") from err
    if not steps or min(steps) < 1:
        raise ConfigError(f"{flag} expects positive step counts, got {text!r}")
    return steps


def parse_list(text: str | None, flag: str) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; ``None`` stays ``None``."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{flag} needs a comma-separated list")
    return names
