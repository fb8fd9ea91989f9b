"""The one place for compatibility fixes with the optional open_clip extra.

open_clip imports torchvision. PyPI's torchvision wheels are CUDA builds: beside the CPU build of torch (the one
these machines install) their compiled operators (``torchvision::nms`` and the rest) fail to load, and
``import torchvision`` then raises ``RuntimeError: operator torchvision::nms does not exist`` from
``torchvision/_meta_registrations.py``, which registers meta kernels for those operators. Measured with torch
2.13.0+cpu and torchvision 0.28.0+cu130. Because peft and transformers import torchvision whenever it is installed,
the same error then breaks ``import diffusers``.

finexl needs only torchvision's Python image transforms (through open_clip), never its compiled operators, so when
the operators are missing :func:`import_torchvision` imports torchvision without the meta registrations. Calling a
compiled torchvision operator (``nms``, ``roi_align``, video decoding) still fails, with torchvision's own message.
``finexl/__init__.py`` calls it when torchvision is installed, before anything else can import it.
"""

from __future__ import annotations

import logging
import sys
import types

logger = logging.getLogger(__name__)

_META = "torchvision._meta_registrations"


def import_torchvision():
    """Import torchvision; if its compiled operators do not match torch, import it without their meta kernels."""
    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        reason = str(err)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules[_META] = types.ModuleType(_META)  # stands in for the registrations of operators that do not exist
    import torchvision

    logger.info("torchvision %s imported without its compiled operators (%s)", torchvision.__version__, reason)
    return torchvision
