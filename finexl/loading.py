"""Loading models from local folders: diffusers pipelines, LoRAs in the diffusers, peft and kohya formats.

Nothing here reaches a model hub. A LoRA is checked against the pipeline it is loaded onto before diffusers
touches the model, so a LoRA made for another base fails with the name of the first module that does not fit.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from pathlib import Path

from finexl.errors import InputError, MissingInputError

logger = logging.getLogger(__name__)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


class LoraError(InputError):
    """A LoRA file that cannot be read or does not fit the base model."""


DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str):
    """The torch dtype called ``name`` (one of ``DTYPES``)."""
    import torch

    if name not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def check_device(device: str) -> str:
    """``device`` if torch knows it and it is present here; raises a one-line error otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"unknown device {device!r}: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but this torch sees no CUDA device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available")
    return device


def load_pipeline(path: str | Path | None = None, device: str = "cpu", dtype: str = "float32", compile: bool = False):
    """A diffusers text-to-image pipeline from a local folder, moved to ``device`` in ``dtype``.

    ``path`` defaults to the toy preset's base (:func:`finexl.presets.toy_base`). ``compile``: the denoiser runs
    through ``torch.compile`` (compiled at its first call; weights changed in place later, as a fused LoRA's are,
    need no new compile).
    """
    from diffusers import DiffusionPipeline

    from finexl.logs import honour_hub_progress_switch
    from finexl.presets import toy_base

    path = Path(path) if path is not None else toy_base()
    if not (path / "model_index.json").is_file():
        raise MissingInputError(f"no diffusers pipeline at {path}: model_index.json is missing")
    index = _read_model_index(path)
    extra = {}
    if (index.get("safety_checker") or [None])[0] is not None:
        # a hub-style SD folder: its checker would black out some images, which would then enter the statistics,
        # and it costs ~300 M parameters and seconds per image; finexl samples without it
        logger.info("%s: the safety checker is not loaded (finexl samples without it)", path)
        extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older know only this
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            honour_hub_progress_switch()
            pipe = DiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype(dtype), **extra)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(f"could not load the diffusers pipeline in {path}: {err}") from err
    pipe.to(check_device(device))
    pipe.set_progress_bar_config(disable=True)
    if compile:
        logger.info("%s: the denoiser is compiled at its first batch (slow once; see docs/speed.md)", path)
        # frozen as a loaded LoRA leaves it (peft freezes the base), so one graph serves the base and any LoRA
        denoiser(pipe).requires_grad_(False).compile(dynamic=False)
    return pipe


def denoiser(pipe):
    """The network a sampler step runs and training trains: the UNet, or a Flux pipeline's transformer."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer


def _read_model_index(path: Path) -> dict:
    import json

    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path / 'model_index.json'} is not valid JSON: {err}") from err
    if not isinstance(index, dict):
        raise InputError(f"{path / 'model_index.json'} is not a JSON object")
    return index


# Transformer pipelines (Flux) keep their default latent size in the pipeline class, not in a config
TRANSFORMER_SAMPLE_SIZE = 128


def native_size(path: str | Path) -> int:
    """The image size a pipeline folder generates by default: the UNet's sample size (a transformer pipeline's,
    Flux's 128, has none in its config) times the VAE's downsampling."""
    import json

    path = Path(path)
    try:
        if (path / "unet" / "config.json").is_file() or not (path / "transformer" / "config.json").is_file():
            sample = json.loads((path / "unet" / "config.json").read_text())["sample_size"]
        else:
            sample = TRANSFORMER_SAMPLE_SIZE
        blocks = json.loads((path / "vae" / "config.json").read_text())["block_out_channels"]
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the UNet (or transformer) and VAE configs of {path}: {err}") from err
    sample = sample[0] if isinstance(sample, list) else sample
    return int(sample) * 2 ** (len(blocks) - 1)


TOY_PREFIX = "toy:"  # a LoRA shipped with the toy world, by name: toy:red


def shipped_loras() -> list[str]:
    """The toy world's shipped LoRAs, as they are named on the command line (``toy:red``)."""
    from finexl.utils import data_dir

    folder = data_dir() / "toy_loras"
    return sorted(TOY_PREFIX + p.name for p in folder.iterdir() if (p / LORA_WEIGHTS_NAME).is_file())


def shipped_lora_path(name: str) -> Path:
    """The folder of a shipped LoRA named ``toy:NAME``; one line listing the names if there is none."""
    from finexl.utils import data_dir

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


def recorded_base(lora_file: str | Path) -> str | None:
    """The fingerprint (:func:`fingerprint_folder`) of the base a LoRA was trained on, as ``finexl train`` records it
    in ``finexl_train_config.json`` beside the weights; ``None`` for LoRAs trained elsewhere."""

    from finexl.utils import read_train_record

    record = read_train_record(Path(lora_file).parent)
    return None if record is None else (record.get("identity") or {}).get("base")


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
_MAGNITUDE = re.compile(r"^(.*)\.lora_magnitude_vector(?:\.default)?(?:\.weight)?$")


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
            raise LoraError(f"{file.name} is {name}, which finexl does not load (LoRA, LoCon, LoHa, LoKr, DoRA); "
                            "merge it into the model and pass --model")  # fmt: skip


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


def _module_and_role(key: str) -> tuple[str, str] | None:
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
        if hit := _MAGNITUDE.match(key):
            magnitudes[hit.group(1)] = tensor
            continue
        found = _module_and_role(key)
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
            raise LoraError(f"the DoRA magnitude of {module} has {magnitude.numel()} values (finite: "
                            f"{bool(torch.isfinite(magnitude).all())}); its layer has {want_out} outputs")  # fmt: skip
    if magnitudes:
        raise LoraError(f"DoRA magnitude for {next(iter(magnitudes))} has no LoRA matrices")
    return len(pairs)


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
        found = _module_and_role(key)
        if found is not None:
            modules.setdefault(found[0], {})[found[1]] = key
        elif hit := _MAGNITUDE.match(key):
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
    unknown = [k for k in state_dict if not k.endswith(".alpha") and _module_and_role(k) is None
               and not _MAGNITUDE.match(k)]  # fmt: skip
    if unknown:
        raise LoraError(f"unrecognised LoRA key {unknown[0]!r} in {file}")
    left = next(iter(dora or magnitudes), None)
    if left is not None:
        raise LoraError(f"DoRA magnitude {left!r} in {file} has no LoRA matrices")
    # peft makes a component's adapter DoRA or not as a whole: a magnitude for some of its modules only is refused
    for component in {k.split(".", 1)[0] for k in out if k.endswith(".lora_magnitude_vector.weight")}:
        plain = [k for k in out if k.startswith(component + ".") and k.endswith(".lora_A.weight")
                 and k.replace(".lora_A.weight", ".lora_magnitude_vector.weight") not in out]  # fmt: skip
        if plain:
            raise LoraError(f"{file.name} has DoRA magnitudes for some {component} modules and not for "
                            f"{len(plain)} others, e.g. {plain[0].removesuffix('.lora_A.weight')}; finexl loads a "
                            "component's modules all DoRA or all plain")  # fmt: skip
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
        raise LoraError(f"the DoRA magnitude of {module} in {file.name} has shape {tuple(magnitude.shape)}, not one "
                        f"value per output ({out_features}): input-channel DoRA is not loaded")  # fmt: skip
    flat = magnitude.reshape(-1).to(up.dtype)
    return flat if up.ndim == 2 else flat.reshape(1, -1, 1, 1)


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


LORA_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")


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


def fuse_lora(pipe, adapter_name: str = "finexl", keep_tuned: bool = True) -> FusedLora:
    """Merge the loaded LoRA into the weights and take its adapter layers out (an unfused LoRA adds two small
    matmuls per layer); the pipeline is left with the personalized weights. Returns the :class:`FusedLora` that
    switches it back to the base and (with ``keep_tuned``) forth again."""
    params = _lora_parameters(pipe)
    base = {key: p.detach().to("cpu", copy=True) for key, p in params.items()}
    pipe.fuse_lora(adapter_names=[adapter_name])
    tuned = {key: p.detach().to("cpu", copy=True) for key, p in params.items()} if keep_tuned else None
    pipe.unload_lora_weights()  # the merged weights stay; the layers are the base's own modules again
    return FusedLora(base, tuned)


# the files of a model folder that make the model: configs, tokenizers and weights in every format
FINGERPRINT_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


# Weights this large are hashed once per (file, size, modification time): the digest is kept in the cache folder
FINGERPRINT_CACHE_BYTES = 64 << 20
FINGERPRINT_CACHE_FILE = "fingerprints.json"


def fingerprint_folder(path: str | Path) -> str:
    """A short SHA-256 over the configs and weights of a model folder or a single weights file.

    A folder or file of at least ``FINGERPRINT_CACHE_BYTES`` is hashed once: its digest is kept in
    ``<finexl cache>/fingerprints.json`` under its absolute path, with every file's size and modification time, and
    reused while they are all unchanged (a 4 GB base costs 10-30 s to hash).
    """
    path = Path(path)
    if path.is_file():
        files = [path]  # a file named on its own is always hashed, whatever its suffix
    else:
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES and not p.name.startswith("."))  # fmt: skip
    stats = [(str(f.relative_to(path) if path.is_dir() else f.name), f.stat()) for f in files]
    size = sum(st.st_size for _, st in stats)
    key = str(path.resolve())
    signature = [[name, st.st_size, st.st_mtime_ns] for name, st in stats]
    cached = _fingerprint_cache() if size >= FINGERPRINT_CACHE_BYTES else None
    entry = cached.get(key) if cached is not None else None
    if isinstance(entry, dict) and entry.get("files") == signature and isinstance(entry.get("digest"), str):
        return entry["digest"]
    digest = hashlib.sha256()
    for f, (name, _) in zip(files, stats, strict=True):
        digest.update(name.encode())
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()[:16]
    if cached is not None:
        _store_fingerprint(key, {"files": signature, "digest": value})
    return value


def _fingerprint_cache_path() -> Path:
    from finexl.explanation.paired import default_cache_dir

    return default_cache_dir() / FINGERPRINT_CACHE_FILE


def _fingerprint_cache() -> dict:
    import json

    from finexl.utils import CACHE_READ_ERRORS

    path = _fingerprint_cache_path()
    if not path.is_file():
        return {}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except CACHE_READ_ERRORS as err:  # damaged: every fingerprint is hashed again and the file written anew
        logger.warning("ignoring the damaged fingerprint cache %s: %s", path, err)
        return {}
    if not isinstance(cached, dict):
        logger.warning("ignoring the damaged fingerprint cache %s: not a JSON object", path)
        return {}
    return cached


def _store_fingerprint(key: str, entry: dict) -> None:
    from finexl.utils import atomic_write_json

    cached = _fingerprint_cache()
    cached[key] = entry
    try:
        atomic_write_json(_fingerprint_cache_path(), cached)
    except OSError as err:  # a read-only cache costs time, not results
        logger.warning("could not keep the fingerprint of %s in %s: %s", key, _fingerprint_cache_path(), err)
