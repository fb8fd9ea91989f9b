"""Training checkpoints that survive a kill at any moment, and the check that a resume continues the same run.

A checkpoint is a folder ``checkpoint-NNNNNN`` holding the trainable weights (safetensors), the optimizer,
learning-rate scheduler, loss scaler and random states (``state.pt``) and ``state.json``. It is written into a
hidden temporary folder and renamed into place, so a run killed mid-save (even by SIGKILL) leaves the earlier
checkpoints intact and at worst a hidden ``.checkpoint-*.tmp`` folder, which is removed on the next start.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from finexl.errors import InputError
from finexl.utils import atomic_dir, atomic_write_json
from finexl.validation import SchemaError, validate

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed from."""


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out_dir``, oldest first."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def remove_stale_temporaries(out_dir: Path) -> None:
    """Remove the hidden half-written files and folders a killed run leaves behind: of checkpoints, of snapshots and
    of the final save (``.result.*.tmp``)."""
    for folder in (checkpoint_dir(out_dir), out_dir / "snapshots", out_dir):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith((".tmp", ".old")):
                logger.warning("removing %s, left by an interrupted save", p)
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def save_checkpoint(
    out_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict, info: dict, keep: int | None
) -> Path:
    """Write ``checkpoint-<step>`` atomically; keep only the newest ``keep`` checkpoints when given."""
    path = checkpoint_dir(out_dir) / f"checkpoint-{step:06d}"
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "trainable.safetensors"))
        torch.save(state, tmp / "state.pt")
        atomic_write_json(tmp / "state.json", {**info, "step": step})  # written last: marks the folder complete
    if keep is not None:
        for _, old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """``(weights, state, info)`` of one checkpoint folder; ``CheckpointError`` when it is damaged."""

    try:
        info = validate(
            json.loads((path / "state.json").read_text(encoding="utf-8")), "checkpoint_state", path / "state.json"
        )
        weights = load_file(str(path / "trainable.safetensors"))
        state = torch.load(path / "state.pt", weights_only=True)
    except SchemaError as err:
        raise CheckpointError(f"checkpoint {path} is damaged: {err}") from err
    except Exception as err:  # json, safetensors and torch raise several types for damaged files
        raise CheckpointError(f"checkpoint {path} is damaged: {err}") from err
    return weights, state, info


def find_resume_checkpoint(out_dir: Path, resume: str | bool) -> Path:
    """The checkpoint to resume from: ``True``/``"latest"`` picks the newest in ``out_dir``, else a folder path."""
    if resume is True or resume == "latest":
        found = list_checkpoints(out_dir)
        if not found:
            raise CheckpointError(f"--resume: no checkpoint in {checkpoint_dir(out_dir)}")
        return found[-1][1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"--resume: {path} is not a checkpoint folder (no state.json)")
    return path


def check_same_run(saved: dict, current: dict, path: Path) -> None:
    """Raise ``CheckpointError`` naming every setting in which the checkpoint's run differs from this one."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            diffs.append(f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}")
    if diffs:
        raise CheckpointError(
            f"cannot resume from {path}: it was made by a different configuration ("
            + "; ".join(diffs)
            + "). Resume with the same settings, or start a new run in another folder."
        )
