"""A LoRA on a pipeline: checked module by module against the base before diffusers touches it, loaded at a scale,
and fused into the weights (switchable back to the base exactly).
"""

from __future__ import annotations

import logging
from pathlib import Path

from finexl.loading.lora_formats import (
    MAGNITUDE_KEY,
    LoraError,
    module_and_role,
    normalized_lora_state_dict,
    resolve_lora_file,
)

logger = logging.getLogger(__name__)

LORA_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")  # the parts of a pipeline a LoRA adapts


def check_lora_fits(pipe, state_dict: dict) -> int:
    """Raise ``LoraError`` naming the first LoRA module that is missing from ``pipe`` or has the wrong shape.

    ``state_dict`` is in diffusers' converted naming (``pipe.lora_state_dict``). Returns the number of modules.
    """
    import torch
    import torch.nn as nn

    components = {name: getattr(pipe, name, None) for name in LORA_COMPONENTS}
    pairs: dict[str, dict[str, tuple]] = {}
    magnitudes = {}
    for key, tensor in state_dict.items():
        if key.endswith(".alpha"):
            continue
        if hit := MAGNITUDE_KEY.match(key):
            magnitudes[hit.group(1)] = tensor
            continue
        found = module_and_role(key)
        if found is None:
            raise LoraError(f"unrecognised LoRA key {key!r}")
        if not torch.is_floating_point(tensor):
            raise LoraError(f"LoRA tensor {key} has dtype {tensor.dtype}; LoRA weights are floating point")
        if not torch.isfinite(tensor).all():
            raise LoraError(f"LoRA tensor {key} holds NaN or infinite values")
        module, role = found
        pairs.setdefault(module, {})[role] = tuple(tensor.shape)
    if not pairs:
        raise LoraError("the LoRA file holds no LoRA weights")
    for module, shapes in sorted(pairs.items()):
        if set(shapes) != {"down", "up"}:
            raise LoraError(f"LoRA module {module} has a {'down' if 'down' in shapes else 'up'} matrix but no partner")
        component, _, rest = module.partition(".")
        model = components.get(component)
        if model is None:
            raise LoraError(f"LoRA module {module} is for a {component!r}, which this pipeline does not have")
        try:
            target = model.get_submodule(rest)
        except AttributeError:
            raise LoraError(
                f"LoRA module {module} does not exist in the base model's {component} (a LoRA for another base?)"
            ) from None
        base = getattr(target, "base_layer", target)  # an adapter already loaded wraps the layer
        down, up = shapes["down"], shapes["up"]
        if isinstance(base, nn.Linear):
            want_in, want_out, want_ndim = base.in_features, base.out_features, 2
        elif isinstance(base, nn.Conv2d):
            want_in, want_out, want_ndim = base.in_channels, base.out_channels, 4
        else:
            raise LoraError(f"LoRA module {module} targets a {type(base).__name__}, not a linear or conv layer")
        if len(down) != want_ndim or len(up) != want_ndim:
            raise LoraError(
                f"LoRA module {module} has {len(down)}-D and {len(up)}-D matrices (shapes {down} and {up}); its base "
                f"layer, a {type(base).__name__}, needs {want_ndim}-D ones"
            )
        if down[1] != want_in or up[0] != want_out or up[1] != down[0] or down[0] < 1:
            raise LoraError(
                f"LoRA module {module} does not fit the base model: LoRA maps {down[1]} -> {up[0]} features "
                f"(rank {down[0]}), the base layer maps {want_in} -> {want_out} (a LoRA for another base?)"
            )
        if want_ndim == 4 and (tuple(down[2:]) != tuple(base.kernel_size) or tuple(up[2:]) != (1, 1)):
            raise LoraError(
                f"LoRA module {module} has kernels {tuple(down[2:])} and {tuple(up[2:])}; its convolution needs "
                f"{tuple(base.kernel_size)} and (1, 1)"
            )
        magnitude = magnitudes.pop(module, None)
        if magnitude is not None and (magnitude.numel() != want_out or not torch.isfinite(magnitude).all()):
            raise LoraError(
                f"the DoRA magnitude of {module} has {magnitude.numel()} values (finite: "
                f"{bool(torch.isfinite(magnitude).all())}); its layer has {want_out} outputs"
            )
    if magnitudes:
        raise LoraError(f"DoRA magnitude for {next(iter(magnitudes))} has no LoRA matrices")
    return len(pairs)


def load_lora(pipe, path: str | Path, scale: float = 1.0, adapter_name: str = "finexl") -> str:
    """Load a LoRA onto ``pipe`` at strength ``scale`` and make it the active adapter.

    Reads the diffusers format (what ``finexl train`` and diffusers' scripts save, rank and alpha in the metadata),
    peft state dicts, and kohya/A1111 files (``lora_unet_...lora_down/lora_up/alpha``); the update of a module is
    ``scale * alpha / rank * up @ down``. Returns the adapter name.
    """
    file = resolve_lora_file(path)
    state_dict = normalized_lora_state_dict(pipe, file)
    n = check_lora_fits(pipe, state_dict)
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    if not any(k.startswith("text_encoder") for k in state_dict):
        # UNet-only LoRAs are the norm; diffusers would warn on every load that the text encoder has no keys
        diffusers_logging.set_verbosity_error()
    try:
        pipe.load_lora_weights(state_dict, adapter_name=adapter_name)
    except Exception as err:
        raise LoraError(f"could not load the LoRA {file} onto the pipeline: {err}") from err
    finally:
        diffusers_logging.set_verbosity(verbosity)
    pipe.set_adapters([adapter_name], adapter_weights=[scale])
    logger.info("loaded LoRA %s (%d modules) at scale %g", file, n, scale)
    return adapter_name


class FusedLora:
    """A LoRA merged into a pipeline's weights, its adapter layers taken out again (see :func:`fuse_lora`).

    The pipeline keeps its plain modules, so it samples at the base's speed and a compiled denoiser stays valid;
    ``base`` and ``tuned`` hold CPU copies of every parameter the LoRA changed, before and after, so that
    :meth:`restore` puts the base back exactly (subtracting the update again would leave it off by rounding) and
    :meth:`apply` puts the personalized weights back without reading the file again (the rounds of
    ``samples='auto'`` switch between the two). ``tuned`` is None when it was not kept (a second copy of the
    changed weights: gigabytes for an SDXL LoRA on every attention layer).
    """

    def __init__(self, base: dict, tuned: dict | None):
        self.base, self.tuned = base, tuned

    def __len__(self) -> int:
        return len(self.base)

    def apply(self, pipe) -> None:
        """The personalized weights."""
        if self.tuned is None:
            raise RuntimeError("the personalized weights were not kept (fuse_lora(keep_tuned=False))")
        _copy_into(pipe, self.tuned)

    def restore(self, pipe) -> None:
        """The base's exact weights."""
        _copy_into(pipe, self.base)


def _lora_parameters(pipe) -> dict:
    """The parameters (weight and any bias) of the layers a loaded LoRA wraps, by (component, parameter path)."""
    from peft.tuners.lora import LoraLayer

    found = {}
    for component in LORA_COMPONENTS:
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                for key, param in module.get_base_layer().named_parameters(recurse=False):
                    found[(component, f"{name}.{key}")] = param
    return found


def _copy_into(pipe, values: dict) -> None:
    import torch

    with torch.no_grad():
        for (component, path), value in values.items():
            target = getattr(pipe, component).get_parameter(path)
            target.copy_(value.to(target.device, target.dtype))


def fuse_lora(pipe, adapter_name: str | list[str] = "finexl", keep_tuned: bool = True) -> FusedLora:
    """Merge the loaded LoRA (or several, a stack: each at the weight ``set_adapters`` gave it) into the weights and
    take the adapter layers out (an unfused LoRA adds two small matmuls per layer); the pipeline is left with the
    personalized weights. Returns the :class:`FusedLora` that switches it back to the base and (with
    ``keep_tuned``) forth again."""
    params = _lora_parameters(pipe)
    base = {key: p.detach().to("cpu", copy=True) for key, p in params.items()}
    pipe.fuse_lora(adapter_names=[adapter_name] if isinstance(adapter_name, str) else list(adapter_name))
    tuned = {key: p.detach().to("cpu", copy=True) for key, p in params.items()} if keep_tuned else None
    pipe.unload_lora_weights()  # the merged weights stay; the layers are the base's own modules again
    return FusedLora(base, tuned)
