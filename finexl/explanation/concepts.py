"""Concept banks and their text directions.

A concept bank is a JSON file::

    {
      "format": "finexl-concepts/1",
      "name": "toy",
      "aspects": {
        "colour": {"group": "colour", "concepts": ["red", "scarlet", "blue"]},
        "blur": {"group": "style", "concepts": [{"phrase": "blurry", "antonym": "sharp"}, "hazy"]}
      }
    }

Each aspect holds concepts: a phrase, or a phrase with its antonym (the other end of the same axis, so a decrease
reads as "less blurry" rather than as a separate concept). ``group`` is the coarse family used when explanations are
grouped (pose, style, background, colour, ...). Phrases and antonyms are unique across the whole bank.

The text direction of a phrase C over prompts t_1..t_m is f(C) = mean_j [Enc_text("t_j, C") - Enc_text(t_j)], built
from the same prompts the images were sampled from (the fix the public re-implementation of FineXL found).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finexl.errors import InputError, MissingInputError
from finexl.utils import CACHE_READ_ERRORS, atomic_write_bytes, data_dir
from finexl.validation import SchemaError, validate

logger = logging.getLogger(__name__)

FORMAT = "finexl-concepts/1"
SHIPPED_BANKS = ("toy", "real")
MAX_DIRECTION_PROMPTS = 64


class ConceptBankError(InputError):
    """A concept bank file that cannot be used."""


@dataclass(frozen=True)
class Concept:
    phrase: str
    aspect: str
    group: str
    antonym: str | None = None


@dataclass
class ConceptBank:
    name: str
    concepts: list[Concept]

    @property
    def aspects(self) -> list[str]:
        return list(dict.fromkeys(c.aspect for c in self.concepts))

    def group_of(self, aspect: str) -> str:
        return next(c.group for c in self.concepts if c.aspect == aspect)

    def phrases(self) -> list[str]:
        """Every phrase and antonym, each once, in bank order."""
        out = []
        for c in self.concepts:
            out.append(c.phrase)
            if c.antonym:
                out.append(c.antonym)
        return out

    def extended(self, aspect: str, phrases: list[str], group: str = "proposed") -> ConceptBank:
        """A copy with ``phrases`` added under ``aspect`` (those already in the bank are skipped)."""
        known = {_key(p) for p in self.phrases()}
        new = [Concept(p.strip(), aspect, group) for p in phrases if p.strip() and _key(p) not in known]
        return ConceptBank(self.name, [*self.concepts, *new])

    def digest(self) -> str:
        text = json.dumps([[c.phrase, c.aspect, c.group, c.antonym] for c in self.concepts])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _key(phrase: str) -> str:
    return re.sub(r"\s+", " ", phrase.strip().lower())


def parse_concept_bank(obj, source: str = "<bank>") -> ConceptBank:
    """Validate a decoded bank (see the module docstring and ``finexl/schemas/concept_bank.schema.json``); errors
    name the aspect and entry."""

    if isinstance(obj, dict) and obj.get("format", FORMAT) == FORMAT:
        try:
            validate(obj, "concept_bank", source)
        except SchemaError as err:
            raise ConceptBankError(str(err)) from err
    if not isinstance(obj, dict) or not isinstance(obj.get("aspects"), dict):
        raise ConceptBankError(f"{source}: a concept bank is a JSON object with an 'aspects' object")
    if obj.get("format", FORMAT) != FORMAT:
        raise ConceptBankError(f"{source}: unknown format {obj.get('format')!r}; expected {FORMAT!r}")
    concepts: list[Concept] = []
    seen: dict[str, str] = {}
    for aspect, spec in obj["aspects"].items():
        where = f"{source}: aspect {aspect!r}"
        if not aspect.strip():
            raise ConceptBankError(f"{source}: empty aspect name")
        if not isinstance(spec, dict) or not isinstance(spec.get("concepts"), list) or not spec["concepts"]:
            raise ConceptBankError(f"{where} needs a non-empty 'concepts' list")
        group = spec.get("group", aspect)
        if not isinstance(group, str) or not group.strip():
            raise ConceptBankError(f"{where}: 'group' must be a non-empty string, got {group!r}")
        for i, entry in enumerate(spec["concepts"]):
            if isinstance(entry, str):
                entry = {"phrase": entry}
            if not isinstance(entry, dict) or set(entry) - {"phrase", "antonym"} or "phrase" not in entry:
                raise ConceptBankError(f"{where}, concept {i}: expected a phrase or {{'phrase', 'antonym'}}")
            words = [entry["phrase"]] + ([entry["antonym"]] if entry.get("antonym") is not None else [])
            for word in words:
                if not isinstance(word, str) or not word.strip():
                    raise ConceptBankError(f"{where}, concept {i}: empty phrase")
                if _key(word) in seen:
                    raise ConceptBankError(
                        f"{where}, concept {i}: phrase {word!r} is a duplicate (already under {seen[_key(word)]!r})"
                    )
                seen[_key(word)] = aspect
            antonym = entry.get("antonym")
            concepts.append(Concept(entry["phrase"].strip(), aspect, group, antonym.strip() if antonym else None))
    if not concepts:
        raise ConceptBankError(f"{source}: the bank has no concepts")
    return ConceptBank(str(obj.get("name", Path(source).stem)), concepts)


def load_concept_bank(spec: str | Path) -> ConceptBank:
    """A bank from a JSON file, or a shipped one by name (``toy`` or ``real``)."""

    if str(spec) in SHIPPED_BANKS:
        path = data_dir() / "concepts" / f"{spec}.json"
    else:
        path = Path(spec)
    if not path.is_file():
        raise MissingInputError(f"concept bank {path} does not exist")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConceptBankError(f"concept bank {path} is not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise ConceptBankError(f"concept bank {path} is not valid JSON: {err}") from err
    return parse_concept_bank(obj, str(path))


@dataclass
class ConceptDirections:
    """Text directions of every phrase of a bank, and the bank's structure.

    ``raw[i]`` is f(phrases[i]). :meth:`design` turns them into the rows an estimator decomposes onto.
    """

    bank: ConceptBank
    phrases: list[str]
    raw: np.ndarray  # (n_phrases, d)
    prompts: list[str] = field(default_factory=list)
    # mean over prompts of Enc_text("prompt, phrase") and of Enc_text(prompt): the text anchors that per-image
    # baselines (VisDiff, SpLiCE) compare images with; raw = anchors - neutral
    anchors: np.ndarray | None = None
    neutral: np.ndarray | None = None

    def row(self, phrase: str) -> np.ndarray:
        return self.raw[self.phrases.index(phrase)]

    def design(self, kind: str) -> Design:
        """``raw``: one row per phrase and antonym, as published (an antonym row counts as a decrease of its
        concept). ``anchors``: the rows of ``raw``, but the text anchors themselves (for methods that compare
        images with texts). ``axes``: one row per concept: f(C) - f(antonym) where there is an antonym, else f(C)
        minus the mean over the aspect's concepts without antonyms (when there are at least two), which removes
        what all values of an aspect share ("a colour word") and keeps what tells them apart."""
        rows, concept_index, polarity, two_sided = [], [], [], []
        if kind == "raw":
            for ci, c in enumerate(self.bank.concepts):
                rows.append(self.row(c.phrase))
                concept_index.append(ci)
                polarity.append(1.0)
                if c.antonym:
                    rows.append(self.row(c.antonym))
                    concept_index.append(ci)
                    polarity.append(-1.0)
        elif kind == "axes":
            plain_mean = {}
            for aspect in self.bank.aspects:
                plain = [self.row(c.phrase) for c in self.bank.concepts if c.aspect == aspect and not c.antonym]
                if len(plain) >= 2:
                    plain_mean[aspect] = np.mean(plain, axis=0)
            for ci, c in enumerate(self.bank.concepts):
                if c.antonym:
                    rows.append(self.row(c.phrase) - self.row(c.antonym))
                else:
                    rows.append(self.row(c.phrase) - plain_mean.get(c.aspect, 0.0))
                concept_index.append(ci)
                polarity.append(1.0)
                two_sided.append(bool(c.antonym))
        elif kind == "anchors":
            if self.anchors is None:
                raise ValueError("these directions carry no text anchors; build them with text_directions")
            raw = self.design("raw")
            index = [self.phrases.index(p) for p in self._raw_phrases()]
            return Design(self.anchors[index], raw.concept_index, raw.polarity)
        else:
            raise ValueError(f"unknown design {kind!r}; expected 'raw', 'axes' or 'anchors'")
        return Design(
            np.asarray(rows),
            np.asarray(concept_index),
            np.asarray(polarity),
            np.asarray(two_sided, dtype=bool) if kind == "axes" else None,
        )

    def _raw_phrases(self) -> list[str]:
        """The phrase of every row of the ``raw`` design, in order."""
        out = []
        for c in self.bank.concepts:
            out.append(c.phrase)
            if c.antonym:
                out.append(c.antonym)
        return out


@dataclass
class Design:
    """The rows an estimator decomposes V_div onto, each tied to a concept with a polarity (+1, or -1 for an
    antonym row: weight on it means the concept decreased)."""

    rows: np.ndarray  # (k, d)
    concept_index: np.ndarray  # (k,)
    polarity: np.ndarray  # (k,)
    # axes only: True where the axis runs between a phrase and its antonym, so that a negative weight names a
    # decrease ("less blurry" = "sharp"); False for a value centred within its aspect ("red" minus the mean colour)
    two_sided: np.ndarray | None = None  # (k,) bool


def direction_prompts(prompts: list[str], limit: int = MAX_DIRECTION_PROMPTS) -> list[str]:
    """The distinct prompts, in order of first use, at most ``limit`` of them (spread evenly over the list)."""
    unique = list(dict.fromkeys(prompts))
    if len(unique) <= limit:
        return unique
    picks = np.linspace(0, len(unique) - 1, limit).round().astype(int)
    return [unique[i] for i in picks]


def compose(prompt: str, phrase: str) -> str:
    return f"{prompt}, {phrase}"


def text_directions(
    embedder, bank: ConceptBank, prompts: list[str], cache_dir: str | Path | None = None
) -> ConceptDirections:
    """f(C) for every phrase and antonym of ``bank`` over ``prompts``; cached by embedder, bank and prompts."""

    used = direction_prompts(prompts)
    phrases = bank.phrases()
    key = hashlib.sha256(json.dumps([embedder.fingerprint, embedder.name, used, phrases]).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "directions" / f"{key}.npz" if cache_dir else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as saved:
                anchors, neutral = saved["anchors"], saved["neutral"]
            if anchors.ndim == 2 and anchors.shape[0] == len(phrases) and neutral.shape == anchors.shape[1:]:
                return ConceptDirections(bank, phrases, anchors - neutral, used, anchors, neutral)
            logger.warning("recomputing cached directions %s: they do not fit this bank", path)
        except CACHE_READ_ERRORS as err:
            logger.warning("recomputing unreadable cached directions %s: %s", path, err)
    base = embedder.embed_texts(used)  # (m, d)
    texts = [compose(p, phrase) for phrase in phrases for p in used]
    anchors = embedder.embed_texts(texts).reshape(len(phrases), len(used), -1).mean(axis=1)
    neutral = base.mean(axis=0)
    if path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, anchors=anchors, neutral=neutral)
        atomic_write_bytes(path, buffer.getvalue())
    return ConceptDirections(bank, phrases, anchors - neutral, used, anchors, neutral)
