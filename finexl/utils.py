"""Small helpers shared by every stage: atomic writes, the data folder, seeding."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from finexl.errors import MissingInputError, OutputError

logger = logging.getLogger(__name__)

# what reading a damaged cache file raises (a truncated .npz: BadZipFile or EOFError; bad JSON: ValueError): such an
# entry is recomputed with a warning, never fatal
CACHE_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def default_cache_dir() -> Path:
    """``$FINEXL_CACHE``, else ``$XDG_CACHE_HOME/finexl``, else ``~/.cache/finexl``."""
    if os.environ.get("FINEXL_CACHE"):
        return Path(os.environ["FINEXL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finexl"


def data_dir() -> Path:
    """The folder that holds the toy world's weights and the concept banks.

    ``$FINEXL_DATA`` when set (read at call time), else ``finexl/data`` inside the installed package (package data:
    a wheel carries it; ``data/`` at the top of a checkout is a link to it).
    """
    path = (
        Path(os.environ["FINEXL_DATA"]) if os.environ.get("FINEXL_DATA") else Path(__file__).resolve().parent / "data"
    )
    if not path.is_dir():
        raise MissingInputError(
            f"finexl data folder {path} does not exist; reinstall finexl (its wheel carries the folder) or point "
            "FINEXL_DATA at a folder holding the toy-world weights"
        )
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: str | Path, folder: bool = False) -> None:
    """The mode a plain ``open``/``mkdir`` would give under the user's umask: temporary files and folders are created
    0600/0700, and a result renamed from one would keep that."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _write_failure(err: BaseException) -> str | None:
    """What went wrong, when ``err`` is a failed write: an ``OSError``, or the errors safetensors and torch's file
    writer raise for one (a full disk surfaces as these, not as ``OSError``); None for anything else."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    kind = type(err).__name__
    if kind == "SafetensorError" or (isinstance(err, RuntimeError) and "inline_container" in str(err)):
        text = str(err).splitlines()[0] if str(err) else kind
        return text if kind == "SafetensorError" else f"the file writer failed ({text}; is the disk full?)"
    return None


def give_default_modes(folder: str | Path) -> None:
    """Every file and folder below ``folder`` (and itself) gets the mode the umask gives: some writers create files
    0600 (safetensors 0.8 writes through a private temporary file), and a result must not depend on which wrote it."""
    folder = Path(folder)
    give_default_mode(folder, folder=True)
    for p in folder.rglob("*"):
        if not p.is_symlink():
            give_default_mode(p, folder=p.is_dir())


@contextmanager
def writing(path: str | Path, advice: str = "") -> Iterator[None]:
    """Turn a failed write of ``path`` (see :func:`_write_failure`) into one line naming it (:class:`OutputError`),
    followed by ``advice``."""
    try:
        yield
    except OutputError:
        raise
    except Exception as err:
        reason = _write_failure(err)
        if reason is None:
            raise
        raise OutputError(f"cannot write {path}: {reason}{advice}") from err


def read_text(path: str | Path, what: str, error: type[Exception]) -> str:
    """A UTF-8 text file a user named: one line naming it if it is missing (``MissingInputError``) or not UTF-8
    (``error``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text: {err}") from err


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with writing(path):
        _atomic_write_text(Path(path), text)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        give_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with writing(path):
        _atomic_write_bytes(Path(path), data)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        give_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole, on error it is removed.

    A reader never sees a half-written folder: either the old one or the complete new one.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        give_default_mode(tmp, folder=True)
    try:
        yield tmp
        give_default_modes(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    with writing(path):
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def seed_everything(seed: int) -> None:

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingClock:
    """Warm-up then cosine learning rate over ``progress = max(step / steps, minutes / max_minutes)``.

    Training on a time budget then still ends with an annealed learning rate, whichever limit comes first.
    """

    def __init__(self, steps: int, max_minutes: float, warmup: int, lr: float, final_fraction: float = 0.05):

        self.steps, self.max_minutes, self.warmup, self.lr = steps, max_minutes, warmup, lr
        self.final_fraction = final_fraction
        self._time = time.time
        self.start = time.time()

    def elapsed(self) -> float:
        return self._time() - self.start

    def progress(self, step: int) -> float:
        return max(step / self.steps, self.elapsed() / 60.0 / self.max_minutes)

    def set_lr(self, optimizer, step: int) -> float:

        p = min(self.progress(step), 1.0)
        cosine = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + math.cos(math.pi * p))
        lr = self.lr * min(1.0, (step + 1) / self.warmup) * cosine
        for group in optimizer.param_groups:  # a group may run at a fixed fraction of the schedule
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def done(self, step: int) -> bool:
        return self.progress(step + 1) >= 1.0


def images_to_tensor(images):
    """uint8 (n, h, w, 3) numpy -> float (n, 3, h, w) torch tensor in [-1, 1], the input convention of the VAEs."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def encode_prompts(text_encoder, tokenizer, texts: list[str]):
    """Last hidden states of a CLIP text encoder, padded to the tokenizer's full length. Shape (n, L, d).

    Gradients flow when enabled: wrap in ``torch.no_grad()`` for a frozen encoder.
    """
    tok = tokenizer(
        texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    )
    return text_encoder(tok.input_ids.to(text_encoder.device))[0]
