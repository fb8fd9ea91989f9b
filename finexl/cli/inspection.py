"""``finexl inspect``: what is in a LoRA file, without a base or an image."""

from __future__ import annotations

import argparse
import json

from finexl.cli.common import positive_int
from finexl.loading.inspection import inspect, trigger_from


def cmd_inspect(args: argparse.Namespace) -> int:

    inspection = inspect(args.lora)
    if args.json:
        print(json.dumps(inspection.to_dict() | {"trigger_guess": trigger_from(inspection)}, indent=2))
        return 0
    print(inspection.table(top_tags=args.top_tags))
    guess = trigger_from(inspection)
    if guess and guess != inspection.trigger:
        print(f"trigger guess (explain --trigger auto): {guess}")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="what is in a LoRA file: format, base family, where it acts and how strongly, training metadata",
        description="Reads the file only (no base, no image; seconds on any size): the format (diffusers, peft, "
        "kohya/A1111, LyCORIS LoCon / LoHa / LoKr, DoRA), the base family its keys and shapes fit (SD 1.x, SD "
        "2.x, SDXL, Flux, the toy base; a note where the metadata claims another), its modules grouped by "
        "component and block with rank, alpha and the Frobenius norm of the weight update (where it acts and how "
        "strongly), and the training metadata in readable form (kohya's ss_* fields with the training tags, "
        "modelspec's trigger phrase, diffusers' adapter metadata, finexl's own training record). Metadata that "
        "cannot be read is named in a note and the rest still shown.",
    )
    p.add_argument("lora", help="a .safetensors LoRA file, a folder holding one, or toy:NAME")
    p.add_argument("--json", action="store_true", help="print the inspection as JSON")
    p.add_argument("--top-tags", type=positive_int, default=10, help="training tags shown (default 10)")
    p.set_defaults(func=cmd_inspect)
