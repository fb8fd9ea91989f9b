"""Models from local folders, by job: :mod:`~finexl.loading.pipelines` (diffusers pipelines, device, dtype),
:mod:`~finexl.loading.lora_formats` (reading every LoRA format finexl takes), :mod:`~finexl.loading.fusion`
(checking a LoRA against its base, loading and fusing it) and :mod:`~finexl.loading.fingerprints`.

Nothing here reaches a model hub. The names most callers need are importable from this package.
"""

from finexl.loading.fingerprints import fingerprint_folder
from finexl.loading.fusion import FusedLora, check_lora_fits, fuse_lora, load_lora
from finexl.loading.lora_formats import (
    LORA_WEIGHTS_NAME,
    TOY_PREFIX,
    LoraError,
    resolve_lora_file,
    shipped_lora_path,
    shipped_loras,
)
from finexl.loading.pipelines import DTYPES, check_device, denoiser, load_pipeline, native_size, torch_dtype

__all__ = [
    "DTYPES",
    "LORA_WEIGHTS_NAME",
    "TOY_PREFIX",
    "FusedLora",
    "LoraError",
    "check_device",
    "check_lora_fits",
    "denoiser",
    "fingerprint_folder",
    "fuse_lora",
    "load_lora",
    "load_pipeline",
    "native_size",
    "resolve_lora_file",
    "shipped_lora_path",
    "shipped_loras",
    "torch_dtype",
]
