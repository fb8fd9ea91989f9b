"""LoRA files: where a LoRA is (a file, a folder, a shipped name), which formats are refused, and every format finexl
reads (diffusers, peft, kohya/A1111, LyCORIS LoCon, LoHa, LoKr, DoRA) as one peft-named state dict.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from finexl.errors import InputError
from finexl.utils import data_dir

logger = logging.getLogger(__name__)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


class LoraError(InputError):
    """A LoRA file that cannot be read or does not fit the base model."""


TOY_PREFIX = "toy:"  # a LoRA shipped with the toy world, by name: toy:red


def shipped_loras() -> list[str]:
    """The toy world's shipped LoRAs, as they are named on the command line (``toy:red``)."""
    folder = data_dir() / "toy_loras"
    return sorted(TOY_PREFIX + p.name for p in folder.iterdir() if (p / LORA_WEIGHTS_NAME).is_file())


def shipped_lora_path(name: str) -> Path:
    """The folder of a shipped LoRA named ``toy:NAME``; one line listing the names if there is none."""
    path = data_dir() / "toy_loras" / name[len(TOY_PREFIX) :]
    if not name[len(TOY_PREFIX) :].isidentifier() or not path.is_dir():
        raise LoraError(f"no shipped LoRA {name!r}; the toy world ships {', '.join(shipped_loras())}")
    return path


def resolve_lora_file(path: str | Path) -> Path:
    """A LoRA ``.safetensors`` file, given the file, a folder holding ``pytorch_lora_weights.safetensors``, or a
    shipped toy LoRA's name (``toy:red``)."""
    if str(path).startswith(TOY_PREFIX):
        path = shipped_lora_path(str(path))
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHTS_NAME
    if not path.is_file():
        raise LoraError(f"LoRA file {path} does not exist")
    if path.suffix != ".safetensors":
        raise LoraError(f"LoRA file {path} is not a .safetensors file (pickled .bin/.pt LoRAs are not loaded)")
    check_lora_format(path)
    return path


# Adapter formats finexl does not load, each told by a key suffix it alone has: (suffix, the format's name). Refused
# in one line before any image (a file of these is otherwise rejected key by key, naming no format).
UNSUPPORTED_FORMATS = (
    ("hada_t1", "LyCORIS LoHa with Tucker decomposition (hada_t1)"),
    ("lokr_t2", "LyCORIS LoKr with Tucker decomposition (lokr_t2)"),
    ("lora_mid.weight", "LyCORIS LoCon with Tucker decomposition (lora_mid)"),
    ("a1.weight", "LyCORIS GLoRA"),
    ("oft_blocks", "OFT"),
    ("oft_diag", "OFT"),
    ("boft_blocks", "BOFT"),
    ("on_input", "(IA)^3"),
    (".diff", "a full weight difference (LyCORIS diff)"),
)

# DoRA magnitudes: LyCORIS/kohya name them ``<module>.dora_scale``, peft and diffusers
# ``<module>.lora_magnitude_vector[.default][.weight]``
DORA_SCALE = ".dora_scale"
MAGNITUDE_KEY = re.compile(r"^(.*)\.lora_magnitude_vector(?:\.default)?(?:\.weight)?$")


def check_lora_format(file: Path) -> None:
    """Refuse, in one line naming it, an adapter format finexl does not load (see ``UNSUPPORTED_FORMATS``). Reads
    only the file's header."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as err:  # a damaged or foreign file: diffusers' reader names the problem later
        logger.debug("could not read the keys of %s: %s", file, err)
        return
    for suffix, name in UNSUPPORTED_FORMATS:
        if any(k.endswith(suffix) or f".{suffix}." in k for k in keys):
            raise LoraError(
                f"{file.name} is {name}, which finexl does not load (LoRA, LoCon, LoHa, LoKr, DoRA); "
                "merge it into the model and pass --model"
            )


# The top-level modules of a UNet, by which a key without a component prefix is known to be the UNet's
UNET_BLOCKS = ("down_blocks", "mid_block", "up_blocks", "conv_in", "conv_out", "time_embedding", "add_embedding")

# Key patterns of the formats diffusers converts to, mapped back to the module they adapt.
_KEY_PATTERNS = (
    (re.compile(r"^(.*)\.lora_[AB]\.(?:default\.)?weight$"), None),  # peft
    (re.compile(r"^(.*)\.lora\.(?:down|up)\.weight$"), None),  # diffusers
    (re.compile(r"^(.*)\.lora_linear_layer\.(?:down|up)\.weight$"), None),  # older diffusers text encoder
    (re.compile(r"^(.*)\.processor\.(to_[qkv]|to_out)_lora\.(?:down|up)\.weight$"), "processor"),  # attn processors
    (re.compile(r"^(.*\.self_attn)\.(to_[qkv]|to_out)_lora\.(?:down|up)\.weight$"), "text_attention"),  # kohya TE
)
_TEXT_ATTENTION = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def module_and_role(key: str) -> tuple[str, str] | None:
    """``(module path, "down" | "up")`` for a LoRA weight key in diffusers' converted naming, else ``None``."""
    role = "down" if (".lora_A." in key or ".down." in key) else "up"
    for pattern, kind in _KEY_PATTERNS:
        m = pattern.match(key)
        if m is None:
            continue
        if kind == "text_attention":
            return f"{m.group(1)}.{_TEXT_ATTENTION[m.group(2)]}", role
        if kind == "processor":
            name = m.group(2)
            return f"{m.group(1)}.{name}{'.0' if name == 'to_out' else ''}", role
        return m.group(1), role
    return None


def _alpha_for(module: str, metadata: dict | None) -> float | None:
    """LoRA alpha of ``module`` from a diffusers file's adapter metadata (``unet.lora_alpha``, alpha patterns)."""
    if not metadata:
        return None
    component, _, rest = module.partition(".")
    pattern = metadata.get(f"{component}.alpha_pattern") or {}
    for key, value in pattern.items():
        if rest == key or rest.endswith("." + key):
            return float(value)
    value = metadata.get(f"{component}.lora_alpha")
    return float(value) if value is not None else None


def normalized_lora_state_dict(pipe, file: Path) -> dict:
    """The LoRA in ``file`` as one peft-named state dict for ``pipe``, alpha / rank folded into the up matrices.

    diffusers reads the formats (its own, peft, kohya/A1111); here each module's scale (``alpha / rank`` from kohya's
    ``.alpha`` keys or from the adapter metadata of a diffusers file) is multiplied into its up matrix, so the dict
    loads with scale 1 whatever recorded it. Text-encoder keys written for transformers' older module layout
    (``text_model.encoder...``) are mapped onto the layout of the loaded encoder.
    """
    try:
        # the UNet's config lets diffusers renumber sd-scripts' SDXL blocks (input_blocks.4.1 -> down_blocks.1...)
        unet = getattr(pipe, "unet", None)
        extra = {"unet_config": unet.config} if unet is not None else {}
        source, dora, dora_of = _prepared_for_diffusers(file)
        read = pipe.lora_state_dict(source, return_lora_metadata=True, **extra)
        # UNet pipelines give (state dict, kohya alphas, metadata); transformer ones (Flux) fold kohya alphas into
        # the matrices and give (state dict, metadata)
        state_dict, alphas, metadata = read if len(read) == 3 else (read[0], None, read[1])
    except LoraError:
        raise
    except Exception as err:  # safetensors and diffusers raise several types for damaged or foreign files
        raise LoraError(f"could not read the LoRA file {file}: {err}") from err
    alphas = alphas or {}
    modules: dict[str, dict[str, str]] = {}
    magnitudes: dict[str, object] = {}
    for key in state_dict:
        found = module_and_role(key)
        if found is not None:
            modules.setdefault(found[0], {})[found[1]] = key
        elif hit := MAGNITUDE_KEY.match(key):
            magnitudes[hit.group(1)] = state_dict[key]
    out = {}
    for module, keys in modules.items():
        if set(keys) != {"down", "up"}:
            raise LoraError(f"LoRA module {module} in {file} has a {next(iter(keys))} matrix but no partner")
        down, up = state_dict[keys["down"]], state_dict[keys["up"]]
        if down.ndim not in (2, 4) or up.ndim not in (2, 4):
            raise LoraError(
                f"LoRA module {module} in {file} has {down.ndim}-D and {up.ndim}-D matrices (shapes "
                f"{tuple(down.shape)} and {tuple(up.shape)}); LoRA matrices are 2-D (linear) or 4-D (convolution)"
            )
        # kohya alphas as diffusers names them: attention layers by their down key, every other layer (projections,
        # feed-forward, convolutions, embeddings) by its module
        alpha = alphas.get(keys["down"] + ".alpha", alphas.get(f"{module}.alpha", _alpha_for(module, metadata)))
        # a DoRA magnitude: a kohya file's found by its down matrix (diffusers renames the matrices, not the scales)
        magnitude = magnitudes.pop(module, None)
        if magnitude is None and id(down) in dora_of:
            magnitude = dora.pop(dora_of[id(down)])
        if module.split(".", 1)[0] in UNET_BLOCKS:  # diffusers' old attention-processor files name no component
            module = "unet." + module
        for name in ("text_encoder", "text_encoder_2"):  # transformers 5 encoders have no text_model level
            encoder = getattr(pipe, name, None)
            prefix = f"{name}.text_model."
            if module.startswith(prefix) and encoder is not None and not hasattr(encoder, "text_model"):
                module = f"{name}." + module[len(prefix) :]
        down, up = _as_conv(pipe, module, down, up)
        out[f"{module}.lora_A.weight"] = down
        out[f"{module}.lora_B.weight"] = up * (float(alpha) / down.shape[0]) if alpha is not None else up
        if magnitude is not None:
            out[f"{module}.lora_magnitude_vector.weight"] = _peft_magnitude(magnitude, up, module, file)
    unknown = [
        k for k in state_dict if not k.endswith(".alpha") and module_and_role(k) is None and not MAGNITUDE_KEY.match(k)
    ]
    if unknown:
        raise LoraError(f"unrecognised LoRA key {unknown[0]!r} in {file}")
    left = next(iter(dora or magnitudes), None)
    if left is not None:
        raise LoraError(f"DoRA magnitude {left!r} in {file} has no LoRA matrices")
    # peft makes a component's adapter DoRA or not as a whole: a magnitude for some of its modules only is refused
    for component in {k.split(".", 1)[0] for k in out if k.endswith(".lora_magnitude_vector.weight")}:
        plain = [
            k
            for k in out
            if k.startswith(component + ".")
            and k.endswith(".lora_A.weight")
            and k.replace(".lora_A.weight", ".lora_magnitude_vector.weight") not in out
        ]
        if plain:
            raise LoraError(
                f"{file.name} has DoRA magnitudes for some {component} modules and not for "
                f"{len(plain)} others, e.g. {plain[0].removesuffix('.lora_A.weight')}; finexl loads a "
                "component's modules all DoRA or all plain"
            )
    return out


# LyCORIS LoHa and LoKr matrices, by key suffix; their modules are rewritten as exact LoRAs before diffusers reads them
_LOHA = (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b")
_LOKR = (".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b")


def _low_rank(state: dict, prefix: str, name: str) -> tuple:
    """LoKr factor ``name`` (``w1`` or ``w2``) of module ``prefix`` as ``(U, V, decomposed)`` with ``W = U V`` and
    ``V`` flattened over its inputs (a convolution's ``w2`` carries the kernel): a full factor is ``I W``."""
    import torch

    full = state.pop(f"{prefix}.lokr_{name}", None)
    if full is not None:
        return torch.eye(full.shape[0], dtype=full.dtype), full.reshape(full.shape[0], -1), False
    a, b = state.pop(f"{prefix}.lokr_{name}_a"), state.pop(f"{prefix}.lokr_{name}_b")
    return a, b.reshape(b.shape[0], -1), True


def lycoris_as_lora(state: dict, prefix: str) -> tuple:
    """A LyCORIS LoHa or LoKr module rewritten as the LoRA ``(down, up)`` with exactly its update, the LyCORIS
    scale folded into ``up`` (so its alpha is its rank). ``state`` loses the module's keys.

    LoHa: ``dW = (w1a w1b) * (w2a w2b) * alpha / r`` (Hadamard product), a LoRA of rank ``r1 r2`` whose rank-one
    terms are the products of the two factors' terms. LoKr: ``dW = kron(w1, w2) * scale`` (for a convolution ``w2``
    carries the kernel), with ``kron(U1 V1, U2 V2) = kron(U1, U2) kron(V1, V2)``; scale is ``alpha / r`` with ``r``
    the rank of a decomposed factor, 1 when both factors are full (as LyCORIS and ComfyUI apply it)."""
    import torch

    alpha = state.pop(f"{prefix}.alpha", None)
    alpha = None if alpha is None else float(alpha)
    if f"{prefix}.hada_w1_a" in state:
        w1a, w1b, w2a, w2b = (state.pop(prefix + k) for k in _LOHA)
        r = w1b.shape[0]
        scale = alpha / r if alpha is not None else 1.0
        up = (w1a[:, :, None] * w2a[:, None, :]).reshape(w1a.shape[0], -1) * scale  # (out, r1 r2)
        down = (w1b[:, None] * w2b[None, :]).reshape(-1, *w1b.shape[1:])  # (r1 r2, in[*k*k])
        return down, up
    u1, v1, split1 = _low_rank(state, prefix, "w1")
    u2, v2, split2 = _low_rank(state, prefix, "w2")
    rank = v1.shape[0] if split1 else v2.shape[0] if split2 else None
    scale = alpha / rank if (alpha is not None and rank is not None) else 1.0
    up = torch.kron(u1, u2) * scale  # (a c, r1 r2)
    # kron(W1, W2)[(p, q), (s, t, kernel)] = W1[p, s] W2[q, (t, kernel)]: the down rows pair V1's and V2's
    down = (v1[:, None, :, None] * v2[None, :, None, :]).reshape(v1.shape[0] * v2.shape[0], -1)
    return down, up


def _prepared_for_diffusers(file: Path) -> tuple:
    """What to hand diffusers' reader for ``file`` (its path, or its tensors with LoHa and LoKr rewritten as LoRAs
    and DoRA scales taken out), and the DoRA scales: ``(path or state dict, {prefix: dora_scale}, {id(down matrix):
    prefix})``. diffusers drops a kohya/LyCORIS file's ``dora_scale`` keys (with a
    warning) before converting the names; they are taken out here and found again by their down matrix, which its
    converter passes on unchanged. LoHa and LoKr modules are rewritten as LoRAs here (:func:`lycoris_as_lora`), so
    that diffusers maps their names as it does a kohya LoRA's."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(file), framework="pt") as handle:
        if not any(k.endswith((DORA_SCALE, *_LOHA, *_LOKR)) for k in handle.keys()):
            return str(file), {}, {}
    state = load_file(str(file))
    for prefix in sorted({k.rsplit(".", 1)[0] for k in state if k.endswith((".hada_w1_a", ".lokr_w1", ".lokr_w1_a"))}):
        try:
            down, up = lycoris_as_lora(state, prefix)
        except (KeyError, RuntimeError, ValueError) as err:  # a missing partner, shapes that do not multiply
            raise LoraError(f"LyCORIS module {prefix} in {file.name} is incomplete or malformed ({err})") from None
        state[f"{prefix}.lora_down.weight"] = down  # a convolution's is flat: reshaped once its layer is known
        state[f"{prefix}.lora_up.weight"] = up
        state[f"{prefix}.alpha"] = torch.tensor(float(down.shape[0]))
    dora = {k[: -len(DORA_SCALE)]: state.pop(k) for k in list(state) if k.endswith(DORA_SCALE)}
    dora_of = {id(state[f"{p}.lora_down.weight"]): p for p in dora if f"{p}.lora_down.weight" in state}
    return state, dora, dora_of


def _as_conv(pipe, module: str, down, up) -> tuple:
    """A LoRA whose matrices are flat (LoHa and LoKr rewritten as LoRAs) for a convolution of ``pipe``: the down
    matrix as ``(rank, in, kh, kw)``, the up matrix as ``(out, rank, 1, 1)``. Anything else is returned as it is."""
    import torch.nn as nn

    if down.ndim != 2 or up.ndim != 2:
        return down, up
    component, _, rest = module.partition(".")
    try:
        layer = getattr(pipe, component).get_submodule(rest)
    except AttributeError:
        return down, up  # check_lora_fits names the module that is not there
    layer = getattr(layer, "base_layer", layer)
    if not isinstance(layer, nn.Conv2d) or down.shape[1] != layer.weight[0].numel():
        return down, up
    return down.reshape(down.shape[0], *layer.weight.shape[1:]), up.reshape(*up.shape, 1, 1)


def _peft_magnitude(magnitude, up, module: str, file: Path):
    """A DoRA magnitude in peft's shape for the layer ``up`` maps to: ``(out,)`` for a linear layer, ``(1, out, 1,
    1)`` for a convolution. A LyCORIS magnitude taken over the output channels is ``(out, 1[, 1, 1])``; one taken over
    the input channels (LyCORIS ``wd_on_out=False``) has no peft form and is refused."""
    out_features = up.shape[0]
    if magnitude.numel() != out_features:
        raise LoraError(
            f"the DoRA magnitude of {module} in {file.name} has shape {tuple(magnitude.shape)}, not one "
            f"value per output ({out_features}): input-channel DoRA is not loaded"
        )
    flat = magnitude.reshape(-1).to(up.dtype)
    return flat if up.ndim == 2 else flat.reshape(1, -1, 1, 1)
