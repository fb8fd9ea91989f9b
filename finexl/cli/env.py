"""``finexl env``: versions, device and data folder."""

from __future__ import annotations

import argparse
import platform
from importlib.util import find_spec

import finexl
from finexl.errors import MissingInputError
from finexl.loading import shipped_loras
from finexl.utils import data_dir


def cmd_env(args: argparse.Namespace) -> int:

    rows = [("finexl", finexl.__version__), ("python", platform.python_version()), ("platform", platform.platform())]
    for name in ("torch", "diffusers", "transformers", "peft", "numpy", "scipy", "sklearn", "safetensors", "PIL"):
        try:
            module = __import__(name)
            rows.append((name, getattr(module, "__version__", "?")))
        except ImportError:
            rows.append((name, "not installed"))
    # open_clip imports torchvision, which can break the CPU stack; report it without importing it.
    rows.append(("open_clip", "installed (optional extra)" if find_spec("open_clip") else "not installed (optional)"))
    import torch

    cuda = "cuda available: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda"
    rows.append(("device", f"cpu by default ({cuda}; choose with --device)"))
    rows.append(("torch threads", str(torch.get_num_threads())))
    try:
        rows.append(("data", str(data_dir())))
        rows.append(("toy LoRAs", ", ".join(shipped_loras()) + "  (name them as --lora toy:NAME)"))
    except MissingInputError as err:
        rows.append(("data", f"missing ({err})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("env", parents=[common], help="versions, device and data folder")
    p.set_defaults(func=cmd_env)
