"""finexl: say in words how a personalized text-to-image model differs from its base, and by how much.

The public API, imported lazily (``import finexl`` loads no torch, unless the open_clip extra's torchvision is
installed: see :mod:`finexl.compat`)::

    import finexl

    e = finexl.explain(lora="data/toy_loras/red")   # the toy world when no base is given
    print(e.table())
    e.to_json("runs/red/explanation.json")

    finexl.explain(lora="my_lora.safetensors", base="models/sd15", clip="models/clip-vit-b-32",
                   concepts="real", prompts=["a photo of a dog", "a city street"], device="cuda")

Training: :func:`train_lora`, :func:`train_dreambooth`; loading: :func:`load_pipeline`, :func:`load_lora`;
the benchmark: :func:`build_suite`, :func:`run_bench`, :func:`compare_bench`, :func:`score_explanations`. Every error a
user can cause is a :class:`FinexlError`.
"""

from __future__ import annotations

import importlib
from importlib.util import find_spec as _find_spec

from finexl.version import __version__

# public name -> module that defines it
_API = {
    "explain": "finexl.explanation.pipeline",
    "inspect": "finexl.loading.inspection",
    "Inspection": "finexl.loading.inspection",
    "ExplainConfig": "finexl.explanation.pipeline",
    "ExplainPipeline": "finexl.explanation.pipeline",
    "Explanation": "finexl.explanation.result",
    "AspectScore": "finexl.explanation.result",
    "SamplerConfig": "finexl.sampling",
    "train_lora": "finexl.train.api",
    "train_dreambooth": "finexl.train.api",
    "TrainConfig": "finexl.train.trainer",
    "load_pipeline": "finexl.loading",
    "load_lora": "finexl.loading",
    "build_suite": "finexl.bench.suites",
    "BuildConfig": "finexl.bench.suites",
    "run_bench": "finexl.bench.runner",
    "BenchConfig": "finexl.bench.runner",
    "compare_bench": "finexl.bench.metrics",
    "score_explanations": "finexl.bench.labels",
    "explain_many": "finexl.collection",
    "rebuild_index": "finexl.collection",
    "search": "finexl.collection",
    "write_report": "finexl.report",
    "write_compare": "finexl.report",
    "model_card": "finexl.report",
    "FinexlError": "finexl.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'finexl' has no attribute {name!r}")

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if _find_spec("torchvision") is not None:
    # only with the open_clip extra: PyPI's CUDA torchvision needs its fix before diffusers or peft import it
    from finexl.compat import import_torchvision as _import_torchvision

    _import_torchvision()
