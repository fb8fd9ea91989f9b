"""finexl: say in words how a personalized text-to-image model differs from its base, and by how much."""

from importlib.util import find_spec as _find_spec

__version__ = "0.1.0"

if _find_spec("torchvision") is not None:  # only with the open_clip extra; see finexl/compat.py
    from finexl.compat import import_torchvision as _import_torchvision

    _import_torchvision()
