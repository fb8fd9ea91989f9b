"""What is in a LoRA file, read without a base or a single image (``finexl inspect``).

The format (diffusers, peft, kohya/A1111, LyCORIS LoCon / LoHa / LoKr, DoRA) is told by the key names; the base
family it fits (SD 1.x / 2.x, SDXL, Flux, the toy world's base) by the key names and the width of the
cross-attention inputs; where it acts by its modules grouped by component and block (down / mid / up, attention /
resnet; Flux's double and single blocks; the text encoders), each group with its ranks, alphas and the Frobenius
norm of its weight update ``(alpha / rank) up @ down`` (computed from the rank x rank Gram matrices, so a large file
takes seconds). The training metadata that trainers write into the file's header (kohya's ``ss_*`` fields,
``modelspec.*``, diffusers' adapter metadata) and finexl's own training record are shown in readable form. A field
that cannot be read is named in ``problems`` and the rest is still shown.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finexl.loading.lora_formats import DORA_SCALE, MAGNITUDE_KEY, LoraError, lycoris_as_lora, resolve_lora_file
from finexl.records import TRAIN_RECORD, read_train_record
from finexl.utils import data_dir

logger = logging.getLogger(__name__)

# the width of the cross-attention inputs (the text encoder's hidden size) of each published base
CONTEXT_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
FAMILY_NAMES = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL",
    "flux": "Flux",
    "toy": "finexl's toy base",
    "unknown": "unknown",
}
# a key's module and the tensor it holds: (module, part)
_PARTS = (
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora.down.weight",
    ".lora.up.weight",
    ".lora_linear_layer.down.weight",
    ".lora_linear_layer.up.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_A.default.weight",
    ".lora_B.default.weight",
    ".alpha",
    DORA_SCALE,
    ".hada_w1_a",
    ".hada_w1_b",
    ".hada_w2_a",
    ".hada_w2_b",
    ".lokr_w1",
    ".lokr_w1_a",
    ".lokr_w1_b",
    ".lokr_w2",
    ".lokr_w2_a",
    ".lokr_w2_b",
)
_DOWN = (".lora_down.weight", ".lora.down.weight", ".lora_linear_layer.down.weight", ".lora_A.weight")
_UP = (".lora_up.weight", ".lora.up.weight", ".lora_linear_layer.up.weight", ".lora_B.weight")
_KOHYA_COMPONENTS = (  # kohya's prefixes, longest first
    ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
    ("lora_te_", "text_encoder"),
    ("lora_unet_", "unet"),
    ("lora_transformer_", "transformer"),
)
STOP_WORDS = {"a", "an", "the", "of", "in", "on", "with", "and", "at", "by", "to", "for", "is", "1girl", "solo"}


@dataclass
class ModuleGroup:
    """The modules of one component and block: how many, their ranks and alphas, and the Frobenius norm of their
    updates (``norm``: of all of them together, the square root of the sum of squares; ``largest``: of one)."""

    component: str
    block: str
    modules: int
    ranks: list[int]
    alphas: list[float]
    norm: float
    largest: float


@dataclass
class Inspection:
    """``finexl inspect``'s answer for one LoRA file."""

    file: str
    bytes: int
    format: str  # diffusers / peft / kohya / LyCORIS LoHa ... (+ DoRA)
    family: str  # one of FAMILY_NAMES
    family_evidence: str
    claimed_family: str | None  # what the metadata says, where it says it
    modules: int
    parameters: int
    groups: list[ModuleGroup]
    training: dict  # readable training metadata, by name
    tags: list[tuple[str, int]]  # training tags by count, most frequent first
    trigger: str | None
    finexl_record: dict | None
    problems: list[str] = field(default_factory=list)
    # a DreamBooth model's (class prompt, instance prompt): finexl's training record, or kohya's training and
    # regularization folders ("10_sks dog" with "1_dog")
    dreambooth: tuple[str, str] | None = None

    @property
    def identifier(self) -> str | None:
        """A DreamBooth model's identifier (see :func:`identifier_of`)."""
        return identifier_of(self.dreambooth)

    @property
    def family_mismatch(self) -> bool:
        return self.claimed_family not in (None, self.family) and self.family != "unknown"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tags"] = [[t, n] for t, n in self.tags]
        out["family_mismatch"] = self.family_mismatch
        return out

    def table(self, top_tags: int = 10) -> str:
        """A readable summary, as ``finexl inspect`` prints it."""
        lines = [f"{self.file} ({self.bytes / 2**20:.1f} MiB)"]
        lines.append(f"format      {self.format}")
        family = f"{FAMILY_NAMES[self.family]} ({self.family_evidence})"
        if self.family_mismatch:
            family += f"; the metadata claims {FAMILY_NAMES[self.claimed_family]}"
        lines.append(f"fits        {family}")
        lines.append(f"modules     {self.modules} adapted, {self.parameters:,} parameters")
        lines.append("")
        lines.append(
            f"{'component':<15} {'block':<16} {'modules':>7} {'rank':>9} {'alpha':>11} {'norm':>9} {'largest':>9}"
        )
        for g in self.groups:
            lines.append(
                f"{g.component:<15} {g.block:<16} {g.modules:>7} {_span(g.ranks):>9} {_span(g.alphas):>11} "
                f"{g.norm:>9.4f} {g.largest:>9.4f}"
            )
        lines.append("norm: Frobenius norm of the groups' weight updates (alpha / rank) up @ down, at scale 1")
        if self.training:
            lines.append("")
            lines.append("training (from the file's metadata)")
            for key, value in self.training.items():
                lines.append(f"  {key:<20} {value}")
        if self.trigger:
            lines.append(f"  {'trigger':<20} {self.trigger}")
        if self.dreambooth:
            cls, instance = self.dreambooth
            lines.append(f"  {'DreamBooth':<20} instance prompt {instance!r}, class prompt {cls!r}")
        if self.tags:
            shown = ", ".join(f"{t} ({n})" for t, n in self.tags[:top_tags])
            lines.append(
                f"  {'top tags':<20} {shown}" + (f" ... {len(self.tags)} in all" if len(self.tags) > top_tags else "")
            )
        if self.finexl_record:
            lines.append("")
            lines.append(f"finexl training record ({TRAIN_RECORD})")
            for key, value in self.finexl_record.items():
                lines.append(f"  {key:<20} {value}")
        if not (self.training or self.tags or self.trigger or self.finexl_record):
            lines.append("")
            lines.append("no training metadata in the file")
        for problem in self.problems:
            lines.append(f"note: {problem}")
        return "\n".join(lines)


def _span(values: list) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    text = (lambda v: f"{v:g}") if isinstance(lo, float) else str
    return text(lo) if lo == hi else f"{text(lo)}-{text(hi)}"


def _split(key: str) -> tuple[str, str] | None:
    """``(module, part)`` of a LoRA key, or None for a key of another kind."""
    for part in sorted(_PARTS, key=len, reverse=True):
        if key.endswith(part):
            return key[: -len(part)], part
    hit = MAGNITUDE_KEY.match(key)
    if hit:
        return hit.group(1), "magnitude"
    return None


def _component(module: str) -> tuple[str, str]:
    """``(component, the module's path inside it)`` for a module name of any format."""
    for prefix, component in _KOHYA_COMPONENTS:
        if module.startswith(prefix):
            return component, module[len(prefix) :]
    module = module.removeprefix("base_model.model.")
    head, _, rest = module.partition(".")
    if head in ("unet", "text_encoder", "text_encoder_2", "transformer"):
        return head, rest
    if re.match(r"(down_blocks|mid_block|up_blocks|conv_in|conv_out|time_embedding)", module):
        return "unet", module
    if module.startswith(("transformer_blocks", "single_transformer_blocks")):
        return "transformer", module
    if module.startswith("text_model"):
        return "text_encoder", module
    return "unet", module


def _block(component: str, path: str) -> str:
    """Where in the component a module sits: ``down attention``, ``mid resnet``, ``double`` (Flux), ..."""
    p = path.replace(".", "_")
    if component.startswith("text_encoder"):
        return "mlp" if "mlp" in p else "attention" if "attn" in p else "other"
    if component == "transformer" or p.startswith(("double_blocks", "single_blocks")):
        if p.startswith(("single_transformer_blocks", "single_blocks")):
            return "single"
        if p.startswith(("transformer_blocks", "double_blocks")):
            return "double"
        return "other"
    where = (
        "down"
        if p.startswith(("down_blocks", "input_blocks"))
        else "mid"
        if p.startswith(("mid_block", "middle_block"))
        else "up"
        if p.startswith(("up_blocks", "output_blocks"))
        else None
    )
    if where is None:
        return "other"
    if any(w in p for w in ("attentions", "transformer_blocks", "proj_in", "proj_out", "attn")):
        kind = "attention"
    elif any(w in p for w in ("resnets", "in_layers", "out_layers", "emb_layers", "skip_connection")):
        kind = "resnet"
    elif "samplers" in p or p.endswith(("_op", "_conv")):  # sd-scripts' samplers: input_blocks_3_0_op, ..._2_conv
        kind = "sampler"
    else:  # sd-scripts' SDXL names: sub-module 1 of an input or output block is its attention, 0 its resnet
        m = re.match(r"(?:input|output)_blocks_\d+_(\d+)_", p + "_")
        kind = {"0": "resnet", "1": "attention"}.get(m.group(1) if m else "", "other")
    return f"{where} {kind}"


def _read_header(path: Path) -> tuple[list[str], dict[str, str], dict]:
    """The keys, the ``__metadata__`` strings and the shapes of a safetensors file (its header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            metadata = handle.metadata() or {}
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in keys}
    except Exception as err:  # safetensors raises several types for a damaged header
        raise LoraError(f"could not read the LoRA file {path}: {err}") from None
    return keys, metadata, shapes


def _update_norm(down, up, scale: float) -> float:
    """``||scale * up @ down||_F`` from the rank x rank Gram matrices: ``trace((up^T up) (down down^T))``."""
    import torch

    d = down.reshape(down.shape[0], -1).double()
    u = up.reshape(up.shape[0], -1).double()
    value = torch.trace((u.T @ u) @ (d @ d.T)).clamp(min=0).sqrt().item()
    return abs(scale) * value


def _format_name(keys: list[str], parts: Counter, kohya: bool) -> str:
    dora = parts[DORA_SCALE] > 0 or parts["magnitude"] > 0
    if parts[".hada_w1_a"]:
        name = "LyCORIS LoHa"
    elif parts[".lokr_w1"] or parts[".lokr_w1_a"]:
        name = "LyCORIS LoKr"
    elif kohya:
        conv = any(k.endswith(".lora_down.weight") and ("conv" in k or "in_layers_2" in k) for k in keys)
        name = "kohya/A1111 LoCon (LyCORIS)" if conv else "kohya/A1111 LoRA"
    elif any(k.startswith("base_model.model.") for k in keys):
        name = "peft"
    elif parts[".lora_A.weight"] or parts[".lora_B.weight"] or parts[".lora_A.default.weight"]:
        name = "diffusers (peft names)"
    elif parts[".lora.down.weight"] or parts[".lora_linear_layer.down.weight"]:
        name = "diffusers (older naming)"
    else:
        name = "unknown"
    return name + (" + DoRA" if dora else "")


def _family(modules: dict[str, dict], shapes: dict) -> tuple[str, str]:
    """The base family the modules fit, and why."""
    names = [m.replace(".", "_") for m in modules]
    if any(re.search(r"(single_transformer_blocks|single_blocks|double_blocks)", n) for n in names) or any(
        _component(m)[0] == "transformer" for m in modules
    ):
        return "flux", "transformer blocks (double and single)"
    widths = set()
    for m, parts in modules.items():
        down = parts.get("down") or parts.get("hada_w1_b")  # a LoHa's input factor has the layer's inputs
        if down is not None and re.search(r"attn2_to_k$|attn2_to_v$", m.replace(".", "_")):
            widths.add(shapes[down][1] if len(shapes[down]) >= 2 else None)
    widths.discard(None)
    layout = None
    if any(_component(m)[0] == "text_encoder_2" for m in modules):
        layout = "a second text encoder"
    elif any(re.search(r"(input_blocks|output_blocks|middle_block|add_embedding|label_emb)", n) for n in names):
        layout = "sd-scripts' SDXL block names"
    elif any(re.search(r"transformer_blocks_[1-9]", n) for n in names):
        layout = "several transformer layers per block"
    if widths:
        width = max(widths)
        if width in CONTEXT_WIDTHS:
            return CONTEXT_WIDTHS[width], f"cross-attention width {width}" + (f", {layout}" if layout else "")
        if width == _toy_context_width() and layout is None:
            return "toy", f"cross-attention width {width}, as the toy base's"
        shape = "an SDXL layout" if layout else "an SD layout"
        return "unknown", f"{shape} with cross-attention width {width}, no published base's"
    if layout:
        return "sdxl", layout
    return "unknown", "no cross-attention module adapted"


def _toy_context_width() -> int | None:
    path = data_dir() / "toy_sd" / "unet" / "config.json"
    try:
        return int(json.loads(path.read_text())["cross_attention_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _claimed_family(metadata: dict) -> str | None:
    """The family the metadata names: kohya's ``ss_base_model_version`` or ``modelspec.architecture``."""
    text = " ".join(metadata.get(k, "") for k in ("modelspec.architecture", "ss_base_model_version")).lower()
    if not text.strip():
        if metadata.get("ss_v2") in ("True", "true"):
            return "sd2"
        return None
    if "flux" in text:
        return "flux"
    if "xl" in text:
        return "sdxl"
    if re.search(r"v2|sd2|stable-diffusion-v2", text):
        return "sd2"
    if re.search(r"v1|sd1|stable-diffusion-v1", text):
        return "sd1"
    return None


# kohya's and modelspec's fields shown by ``inspect``, with the name shown
_TRAINING_FIELDS = (
    ("modelspec.title", "title"),
    ("ss_output_name", "output name"),
    ("ss_sd_model_name", "base model"),
    ("ss_base_model_version", "base version"),
    ("modelspec.architecture", "architecture"),
    ("ss_num_train_images", "images"),
    ("ss_num_reg_images", "regularization images"),
    ("ss_num_epochs", "epochs"),
    ("ss_max_train_steps", "steps"),
    ("ss_steps", "steps done"),
    ("ss_resolution", "resolution"),
    ("modelspec.resolution", "resolution"),
    ("ss_learning_rate", "learning rate"),
    ("ss_unet_lr", "UNet learning rate"),
    ("ss_text_encoder_lr", "text encoder lr"),
    ("ss_network_module", "network"),
    ("ss_network_dim", "rank"),
    ("ss_network_alpha", "alpha"),
    ("ss_network_args", "network args"),
    ("ss_optimizer", "optimizer"),
    ("ss_training_comment", "comment"),
    ("modelspec.date", "date"),
)


def _training(metadata: dict, problems: list[str]) -> tuple[dict, list[tuple[str, int]], str | None]:
    """Readable training metadata, the training tags by count, and the trigger phrase."""
    training: dict = {}
    for key, name in _TRAINING_FIELDS:
        value = metadata.get(key)
        if value in (None, "", "None"):
            continue
        training.setdefault(name, value[:200])
    adapter = metadata.get("lora_adapter_metadata")
    if adapter:
        try:
            config = json.loads(adapter)
            for component in sorted({k.split(".", 1)[0] for k in config}):
                r, a = config.get(f"{component}.r"), config.get(f"{component}.lora_alpha")
                if r is not None:
                    training[f"{component} rank/alpha"] = f"{r} / {a}"
        except (ValueError, AttributeError) as err:
            problems.append(f"lora_adapter_metadata is not a JSON object ({err}); left out")
    tags: Counter = Counter()
    if metadata.get("ss_tag_frequency"):
        try:
            frequency = json.loads(metadata["ss_tag_frequency"])
            for counts in frequency.values():
                for tag, n in counts.items():
                    tags[str(tag).strip()] += int(n)
        except (ValueError, AttributeError, TypeError) as err:
            problems.append(f"ss_tag_frequency is not a JSON object of tag counts ({err}); tags left out")
    if metadata.get("ss_dataset_dirs"):
        try:
            dirs = json.loads(metadata["ss_dataset_dirs"])
            training.setdefault("images", str(sum(int(d.get("img_count", 0)) for d in dirs.values())))
            training["dataset folders"] = ", ".join(
                f"{name} ({d.get('img_count', '?')} x {d.get('n_repeats', '?')})" for name, d in dirs.items()
            )[:200]
        except (ValueError, AttributeError, TypeError) as err:
            problems.append(f"ss_dataset_dirs is not a JSON object of folders ({err}); left out")
    trigger = (metadata.get("modelspec.trigger_phrase") or "").strip() or None
    return training, sorted(tags.items(), key=lambda t: (-t[1], t[0])), trigger


def trigger_from(inspection: Inspection) -> str | None:
    """The word that triggers a LoRA: the metadata's trigger phrase, else a DreamBooth model's identifier, else the
    most frequent training tag that is not a common word."""
    if inspection.trigger:
        return inspection.trigger
    if inspection.identifier:
        return inspection.identifier
    for tag, _ in inspection.tags:
        if tag.lower() not in STOP_WORDS and len(tag) > 1:
            return tag
    return None


def identifier_of(pair: tuple[str, str] | None) -> str | None:
    """A DreamBooth model's identifier from its (class prompt, instance prompt): the instance prompt's words that
    the class prompt lacks."""
    if pair is None:
        return None
    cls, instance = pair
    new = [w for w in instance.split() if w not in cls.split() and w.lower() not in STOP_WORDS]
    return " ".join(new) or None


def dreambooth_of(lora: str | Path) -> tuple[str, str] | None:
    """A DreamBooth model's (class prompt, instance prompt) from the file's header and finexl's training record
    alone (no tensor is read): what ``explain`` samples it on by default. None for any other LoRA."""
    path = resolve_lora_file(lora)
    metadata = _read_header(path)[1]
    return _dreambooth_pair(metadata, _finexl_record(path.parent, []))


KOHYA_FOLDER = re.compile(r"^\d+_(.+)$")  # kohya's image folders: REPEATS_NAME


def _dreambooth_pair(metadata: dict, record: dict | None) -> tuple[str, str] | None:
    """(class prompt, instance prompt): finexl's training record; else kohya's DreamBooth layout, one training
    folder "N_IDENTIFIER CLASS" and regularization folders, one of them "N_CLASS". None otherwise (a damaged
    folder table is named by ``_training``)."""
    record = record or {}
    instance, cls = record.get("instance prompt"), record.get("class prompt")
    if instance:
        words = instance.split()
        if not cls:  # without prior preservation: the instance prompt without its first uncommon word
            rare = next((w for w in words if w.lower() not in STOP_WORDS), None)
            cls = " ".join(w for w in words if w != rare)
        return (cls, instance) if cls and cls != instance else None
    try:
        train = json.loads(metadata.get("ss_dataset_dirs") or "{}")
        reg = json.loads(metadata.get("ss_reg_dataset_dirs") or "{}")
    except ValueError:
        return None
    if not (isinstance(train, dict) and isinstance(reg, dict)) or len(train) != 1 or not reg:
        return None
    names = [KOHYA_FOLDER.match(str(k)) for k in (*train, *reg)]
    if not all(names):
        return None
    instance, classes = names[0].group(1).strip(), [m.group(1).strip() for m in names[1:]]
    for cls in classes:
        if cls and instance.endswith(" " + cls):
            return cls, instance
    return None


def _finexl_record(folder: Path, problems: list[str]) -> dict | None:
    try:
        record = read_train_record(folder)
    except Exception as err:  # a damaged record: named, the rest still shown
        problems.append(str(err).splitlines()[0])
        return None
    if record is None:
        return None
    identity = record.get("identity") or {}
    keep = {
        "method": record.get("method"),
        "base fingerprint": identity.get("base"),
        "rank / alpha": f"{record.get('rank')} / {record.get('alpha')}",
        "steps done": record.get("steps_done"),
        "learning rate": record.get("lr"),
        "instance prompt": record.get("instance_prompt"),
        "class prompt": record.get("class_prompt"),
        "data": record.get("data") or identity.get("data"),
        "seconds": record.get("seconds"),
    }
    return {k: v for k, v in keep.items() if v not in (None, "None / None")}


def inspect(lora: str | Path) -> Inspection:
    """What is in a LoRA file (or a folder holding ``pytorch_lora_weights.safetensors``, or ``toy:NAME``): its
    format, the base family it fits, where it acts and how strongly, and its training metadata. No model is
    loaded and no image made."""
    from safetensors import safe_open

    path = resolve_lora_file(lora)
    keys, metadata, shapes = _read_header(path)
    problems: list[str] = []
    modules: dict[str, dict] = {}
    parts: Counter = Counter()
    skipped = []
    for key in keys:
        split = _split(key)
        if split is None:
            skipped.append(key)
            continue
        module, part = split
        parts[part] += 1
        role = "down" if part in _DOWN or part == ".lora_A.default.weight" else "up" if part in _UP else None
        role = role or ("up" if part == ".lora_B.default.weight" else part.lstrip("."))
        modules.setdefault(module, {})[role] = key
    if not modules:
        raise LoraError(f"{path} holds no LoRA matrices (keys such as {keys[:2]})")
    if skipped:
        problems.append(f"{len(skipped)} key(s) of no LoRA module were left out, e.g. {skipped[0]!r}")
    kohya = any(m.startswith(tuple(p for p, _ in _KOHYA_COMPONENTS)) for m in modules)
    adapter = {}
    try:
        adapter = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    except ValueError:
        pass  # named by _training
    peft_config = path.parent / "adapter_config.json"
    if peft_config.is_file():
        try:
            peft = json.loads(peft_config.read_text(encoding="utf-8"))
            adapter = adapter or (peft if isinstance(peft, dict) else {})
        except (ValueError, UnicodeDecodeError) as err:
            problems.append(f"{peft_config.name} is not a JSON object ({err}); alphas taken as the ranks")

    family, evidence = _family({m: p for m, p in modules.items()}, shapes)
    groups: dict[tuple[str, str], dict] = {}
    n_params = 0
    with safe_open(str(path), framework="pt") as handle:
        for module, roles in sorted(modules.items()):
            component, inner = _component(module)
            try:
                if "hada_w1_a" in roles or "lokr_w1" in roles or "lokr_w1_a" in roles:
                    state = {roles[r]: handle.get_tensor(roles[r]) for r in roles}
                    n_params += sum(t.numel() for k, t in state.items() if not k.endswith(".alpha"))
                    down, up = lycoris_as_lora(state, module)  # the LyCORIS scale already folded into up
                    rank, alpha, scale = int(down.shape[0]), None, 1.0
                else:
                    down, up = handle.get_tensor(roles["down"]), handle.get_tensor(roles["up"])
                    n_params += down.numel() + up.numel()
                    rank = int(down.shape[0])
                    alpha = float(handle.get_tensor(roles["alpha"]).item()) if "alpha" in roles else None
                    if alpha is None:
                        alpha = _adapter_alpha(adapter, component, inner)
                    scale = (alpha / rank) if alpha is not None else 1.0
                norm = _update_norm(down, up, scale)
            except KeyError as err:
                problems.append(f"module {module} is missing its {err.args[0]} matrix; left out")
                continue
            except (RuntimeError, ValueError) as err:
                problems.append(f"module {module} could not be read ({err}); left out")
                continue
            if not math.isfinite(norm):
                problems.append(f"module {module} holds NaN or infinite weights")
            g = groups.setdefault(
                (component, _block(component, inner)),
                {"modules": 0, "ranks": set(), "alphas": set(), "sq": 0.0, "max": 0.0},
            )
            g["modules"] += 1
            g["ranks"].add(rank)
            g["alphas"].add(float(alpha) if alpha is not None else float(rank))
            g["sq"] += norm**2
            g["max"] = max(g["max"], norm)
    order = ["text_encoder", "text_encoder_2", "unet", "transformer"]
    blocks = ["down attention", "down resnet", "down sampler", "down other", "mid attention", "mid resnet",
              "mid other", "up attention", "up resnet", "up sampler", "up other", "double", "single", "attention",
              "mlp", "other"]  # fmt: skip
    result_groups = [
        ModuleGroup(c, b, g["modules"], sorted(g["ranks"]), sorted(g["alphas"]), math.sqrt(g["sq"]), g["max"])
        for (c, b), g in sorted(
            groups.items(),
            key=lambda item: (
                order.index(item[0][0]) if item[0][0] in order else 9,
                blocks.index(item[0][1]) if item[0][1] in blocks else 99,
            ),
        )
    ]
    training, tags, trigger = _training(metadata, problems)
    claimed = _claimed_family(metadata)
    record = _finexl_record(path.parent, problems)
    inspection = Inspection(
        file=str(path),
        bytes=path.stat().st_size,
        format=_format_name(keys, parts, kohya),
        family=family,
        family_evidence=evidence,
        claimed_family=claimed,
        modules=sum(g.modules for g in result_groups),
        parameters=n_params,
        groups=result_groups,
        training=training,
        tags=tags,
        trigger=trigger,
        finexl_record=record,
        problems=problems,
        dreambooth=_dreambooth_pair(metadata, record),
    )
    if inspection.family_mismatch:
        problems.append(
            f"the metadata claims {FAMILY_NAMES[claimed]}, but the weights fit {FAMILY_NAMES[family]} ({evidence})"
        )
    return inspection


def _adapter_alpha(adapter: dict, component: str, inner: str) -> float | None:
    """A module's alpha from diffusers' adapter metadata or a peft ``adapter_config.json`` (its alpha pattern, else
    its ``lora_alpha``)."""
    pattern = adapter.get(f"{component}.alpha_pattern") or adapter.get("alpha_pattern") or {}
    for key, value in pattern.items() if isinstance(pattern, dict) else ():
        if inner == key or inner.endswith("." + key):
            return float(value)
    value = adapter.get(f"{component}.lora_alpha", adapter.get("lora_alpha"))
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
