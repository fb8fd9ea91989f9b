"""The training record: ``finexl_train_config.json``, written beside the weights of every model finexl trains (a
LoRA, a pipeline, a toy-world model) and read back, checked against its schema, to say which base a LoRA was
trained on and what a continued run continued. The one place that names the file.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from finexl.utils import atomic_write_json
from finexl.validation import read_json

TRAIN_RECORD = "finexl_train_config.json"


def train_record(cfg, steps_done: int, seconds: float, continued_from: dict | None = None, **extra) -> dict:
    """What a training run saves beside its weights: its config (a dataclass), the steps done, the wall seconds,
    any ``extra`` figures, and, for a run that continued another, that run's record under ``continued_from`` (read
    it with :func:`read_train_record` before the run saves anything: a run may write over the folder it continues)."""
    record = {**asdict(cfg), "steps_done": steps_done, "seconds": round(seconds, 1), **extra}
    if continued_from is not None:
        record["continued_from"] = continued_from
    return record


def write_train_record(folder: str | Path, record: dict) -> Path:
    """Write ``record`` as the training record of ``folder`` (atomically); returns the file."""
    path = Path(folder) / TRAIN_RECORD
    atomic_write_json(path, record)
    return path


def read_train_record(folder: str | Path | None) -> dict | None:
    """The training record of a model folder, checked against its schema; None (no folder given, or none
    recorded). A damaged record is an error naming the file."""
    if folder is None:
        return None
    path = Path(folder) / TRAIN_RECORD
    return read_json(path, "train_record", "training record") if path.is_file() else None


def recorded_base(lora_file: str | Path) -> str | None:
    """The fingerprint (:func:`finexl.loading.fingerprint_folder`) of the base a LoRA was trained on, as ``finexl
    train`` records it beside the weights; ``None`` for LoRAs trained elsewhere."""
    record = read_train_record(Path(lora_file).parent)
    return None if record is None else (record.get("identity") or {}).get("base")
