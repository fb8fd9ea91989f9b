"""Settings defined once: a field of a config dataclass carries its name, default, help, range and command-line flag.

A config is a dataclass deriving from :class:`Config` whose fields are made with :func:`setting`. From that one
definition come the checks (``Config.__post_init__``: ranges, choices, finite numbers), the round trip
(``to_dict`` / ``from_dict(strict=True)`` / ``from_json`` / ``to_json``) and the command line
(:func:`add_arguments` generates the flags, their parsers and help; :func:`from_args` builds the config from what
the user gave, so an option left out keeps the dataclass's default). A small helper of finexl's own rather than
transformers' ``HfArgumentParser``: that one takes every field as a flag named after it, while finexl's flags keep
their published names (``--bootstrap``, ``--no-null``), some settings have no flag, and the value parsers check
ranges with the same definition the dataclass checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finexl.errors import ConfigError
from finexl.utils import atomic_write_json
from finexl.validation import load_json

MISSING = dataclasses.MISSING


def setting(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    kind: type | None = None,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    maximum: float | None = None,
    choices: tuple | Callable[[], tuple] | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    repeat: bool = False,
    cli: bool = True,
    default_text: str | None = None,
):
    """A dataclass field with everything about the setting in one place.

    ``kind``: the type a command-line value is read as (default: the default's type); ``minimum``/``maximum``
    (inclusive) and ``above``/``below`` (exclusive) bound numbers, ``choices`` (a tuple, or a function giving
    one) bound strings; ``None`` is always accepted where it is the default. ``flag``: the option's name (default
    ``--`` and the field's name with dashes; a boolean that defaults to True gets ``--no-NAME``); ``parse``: a
    parser of the option's text instead of ``kind``; ``repeat``: the option may be given several times, each
    adding one value; ``cli=False``: no flag. ``default_text``: the default as the
    help shows it, where the value itself says little (``None`` meaning "the base's native size").
    """
    metadata = {
        "help": help,
        "flag": flag,
        "kind": kind,
        "minimum": minimum,
        "above": above,
        "below": below,
        "maximum": maximum,
        "choices": choices,
        "parse": parse,
        "metavar": metavar,
        "repeat": repeat,
        "cli": cli,
        "default_text": default_text,
    }
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> tuple | None:
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def _bounds_text(meta: dict) -> str:
    parts = []
    if meta.get("minimum") is not None:
        parts.append(f">= {meta['minimum']}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']}")
    if meta.get("below") is not None:
        parts.append(f"< {meta['below']}")
    if meta.get("maximum") is not None:
        parts.append(f"<= {meta['maximum']}")
    return " and ".join(parts)


def check_value(name: str, f: dataclasses.Field, value: Any) -> None:
    """Raise ``ConfigError`` when ``value`` breaks the bounds or choices ``f`` declares."""
    meta = f.metadata
    if value is None:
        return
    choices = choices_of(f)
    if choices is not None and isinstance(value, str) and value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    low, high = meta.get("minimum"), meta.get("maximum")
    above, below = meta.get("above"), meta.get("below")
    if (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        raise ConfigError(f"{name} must be {_bounds_text(meta)}, got {value}")


class Config:
    """What every config dataclass shares: checks from its field definitions, and a strict round trip."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            nested = _nested_type(type(self), f)
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value)
                setattr(self, f.name, value)
            if f.metadata:
                check_value(f.name, f, value)

    def to_dict(self) -> dict:
        """Every field, nested configs as dicts, tuples as lists: what ``from_dict`` reads back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, obj: dict, strict: bool = True, source: str = "") -> Config:
        """The config of ``obj``; with ``strict`` a key that is no field is an error naming it."""
        where = f"{source}: " if source else ""
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}a {cls.__name__} must be a JSON object, got {type(obj).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - set(known))
        if unknown and strict:
            raise ConfigError(f"{where}unknown {cls.__name__} setting(s) {', '.join(unknown)}")
        values = {}
        for name, value in obj.items():
            if name not in known:
                continue
            nested = _nested_type(cls, known[name])
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value, strict, source)
            elif isinstance(value, list) and isinstance(known[name].default, tuple):
                value = tuple(value)
            values[name] = value
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"{where}{err}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        """The config written by :meth:`to_json`."""
        return cls.from_dict(load_json(Path(path), f"{cls.__name__} file"), source=str(path))

    def to_json(self, path: str | Path) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)


def _nested_type(cls: type, f: dataclasses.Field) -> type | None:
    """The Config class of a field holding a nested config (its default factory's type), else None."""
    if f.default_factory is not MISSING:
        made = f.default_factory()
        if isinstance(made, Config):
            return type(made)
    return None


# ---------------------------------------------------------------------------------------------------------------
# the command line


def _flag(f: dataclasses.Field) -> str:
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    name = f.name.replace("_", "-")
    return f"--no-{name}" if f.default is True else f"--{name}"


def value_parser(f: dataclasses.Field) -> Callable[[str], Any]:
    """The argparse type of a field: its ``parse``, else its kind checked against its bounds."""
    meta = f.metadata
    if meta.get("parse"):
        return meta["parse"]
    kind = meta.get("kind") or (type(f.default) if f.default not in (None, MISSING) else str)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            check_value(f.name, f, value)
        except ConfigError:
            bounds = _bounds_text(meta)
            what = "a finite number" if kind is float else "an integer" if kind is int else "a value"
            raise argparse.ArgumentTypeError(
                f"expected {what}{' ' + bounds if bounds else ''}, got {text!r}"
            ) from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_arguments(
    parser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    defaults: Config | None = None,
    prefix: str = "",
) -> None:
    """Add a flag for every field of ``cls`` that has one (those in ``only`` if given, not those in ``skip``);
    nested configs add theirs. Defaults are not set on the parser: an option left out is absent from the namespace
    and keeps the dataclass's default (or that of ``defaults``, shown in the help)."""
    defaults = defaults if defaults is not None else cls()
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, Config):
            add_arguments(parser, type(value), skip=skip, defaults=value, prefix=f"{prefix}{f.name}.")
            continue
        meta = f.metadata
        if not meta or not meta.get("cli", True):
            continue
        dest = prefix + f.name
        shown = meta.get("default_text") or value
        help_text = meta["help"]
        if isinstance(value, bool):
            action = "store_false" if value else "store_true"
            parser.add_argument(_flag(f), dest=dest, action=action, default=argparse.SUPPRESS, help=help_text)
            continue
        if shown not in (None, "", ()):
            help_text = f"{help_text} (default: {','.join(map(str, shown)) if isinstance(shown, tuple) else shown})"
        metavar = meta.get("metavar") or _flag(f).lstrip("-").upper().replace("-", "_")
        if meta.get("repeat"):
            parser.add_argument(
                _flag(f), dest=dest, action="append", default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )
            continue
        choices = choices_of(f)
        parser.add_argument(
            _flag(f),
            dest=dest,
            type=value_parser(f),
            default=argparse.SUPPRESS,
            choices=choices,
            metavar=None if choices else metavar,
            help=help_text,
        )


def given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict:
    """The fields of ``cls`` the command line gave (flags left out are absent), nested configs as dicts."""
    out = {}
    for f in dataclasses.fields(cls):
        nested = _nested_type(cls, f)
        if nested is not None:
            inner = given(args, nested, f"{prefix}{f.name}.")
            if inner:
                out[f.name] = inner
        elif f.metadata.get("cli", True) and hasattr(args, prefix + f.name):
            out[f.name] = getattr(args, prefix + f.name)
    return out


def from_args(cls: type, args: argparse.Namespace, defaults: Config | None = None, **more) -> Config:
    """The config of the flags :func:`add_arguments` added, over ``defaults`` (else the dataclass's), with
    ``more`` on top."""
    base = (defaults if defaults is not None else cls()).to_dict()
    for name, value in given(args, cls).items():
        base[name] = {**base[name], **value} if isinstance(value, dict) else value
    return cls.from_dict({**base, **more})
