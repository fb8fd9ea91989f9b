"""``finexl explain`` and ``finexl narrate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from finexl.cli.common import (
    add_compute_arguments,
    finite_float,
    nonnegative_int,
    parse_list,
    positive_float,
    positive_int,
    set_threads,
)
from finexl.config import add_arguments, from_args
from finexl.errors import InputError
from finexl.explanation.pipeline import ExplainConfig, ExplainPipeline
from finexl.explanation.result import Explanation, format_stack, format_sweep, format_trigger
from finexl.narrate.narrator import narrate_explanation
from finexl.narrate.templates import check_aspects
from finexl.report import write_report
from finexl.utils import writing

VLM_SETTINGS = ("vlm", "vlm_endpoint", "vlm_model", "vlm_pairs")  # explain's own group of flags


def config_from_args(args: argparse.Namespace, **more) -> ExplainConfig:
    """The ``ExplainConfig`` of the flags :func:`add_settings_arguments` generated (``more``: the rest)."""
    return from_args(ExplainConfig, args, **more)


def cmd_explain(args: argparse.Namespace) -> int:

    set_threads(args)
    asked = parse_list(args.aspects, "--aspects")
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_file():
            raise InputError(f"--out {out} is a file; give a folder")
        for name in ("explanation.json", "report.html"):
            if (out / name).exists() and not args.overwrite:
                raise InputError(f"{out / name} exists; pass --overwrite to replace it")
        with writing(out):  # a folder that cannot be made is found now, not after the sampling
            out.mkdir(parents=True, exist_ok=True)
    cfg = config_from_args(args, api_key_env=args.llm_api_key_env, **({} if out is not None else {"report_pairs": 0}))
    pipeline = ExplainPipeline(cfg, progress=not args.quiet)  # checks every setting and file up front
    check_aspects(pipeline.bank.aspects + (["proposed"] if cfg.vlm or cfg.vlm_endpoint else []), asked)
    if getattr(args, "scales", None) is not None and args.scale:  # an option left out is not set
        raise InputError("give --scale or --scales (a weight sweep), not both")
    loras, scales = args.lora, args.scale or [1.0]
    if loras and len(scales) not in (1, len(loras)):
        raise InputError(f"{len(loras)} --lora take one --scale for all or one each, got {len(scales)}")
    lora = (loras[0] if len(loras) == 1 else loras) if loras else None
    explanation = pipeline(lora=lora, model=args.model, scale=scales[0] if len(scales) == 1 else scales)
    print(explanation.table(top=args.top))
    if explanation.sweep:
        print()
        print(format_sweep(explanation.sweep, top=args.top))
    if explanation.stack:
        print()
        print(format_stack(explanation.stack, top=args.top))
    if explanation.trigger:
        print()
        print(format_trigger(explanation.to_dict(), top=args.top))
    if out is not None:  # saved before the optional sentences, which may fail or wait on a network
        explanation.save(out, overwrite=True)
    _narrate(explanation, args, asked, cfg.device, cfg.cache_dir)
    if out is not None:  # again, with the sentences
        print(f"wrote {explanation.to_json(out / 'explanation.json')}")
        if not args.no_report:
            print(f"wrote {write_report(out, overwrite=True)}")
    return 0


def _narrate(explanation, args: argparse.Namespace, asked: list[str] | None, device: str, cache_dir: str | None):

    narration = narrate_explanation(
        explanation,
        args.format,
        asked,
        llm=args.llm,
        llm_endpoint=args.llm_endpoint,
        llm_model=args.llm_model,
        timeout=args.llm_timeout,
        retries=args.llm_retries,
        cache_dir=cache_dir,
        device=device,
        api_key_env=args.llm_api_key_env,
    )
    explanation.sentences = narration.to_json()
    print()
    print(narration.text)
    if narration.note:
        print(f"note: {narration.note}")
    return narration


def cmd_narrate(args: argparse.Namespace) -> int:

    path = Path(args.explanation)
    explanation = Explanation.from_json(path)
    asked = parse_list(args.aspects, "--aspects")
    check_aspects([a.aspect for a in explanation.aspects], asked)
    _narrate(explanation, args, asked, args.device, args.cache_dir)
    if args.write:
        explanation.to_json(path)
    return 0


def add_narration_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sentences")
    g.add_argument(
        "--format",
        default="bullets",
        choices=["summary", "bullets", "paragraph"],
        help="one-line summary, a bullet per aspect (default), or a paragraph grouped by aspect family",
    )
    g.add_argument("--aspects", help="comma-separated aspects to report even when unchanged, e.g. pose,blur")
    g.add_argument("--llm", help="local transformers chat model folder to write the sentences")
    g.add_argument("--llm-endpoint", help="OpenAI-compatible API base URL, e.g. http://localhost:11434/v1 (Ollama)")
    g.add_argument("--llm-model", help="model name at --llm-endpoint")
    g.add_argument(
        "--llm-timeout",
        type=positive_float,
        default=60.0,
        help="deadline in seconds for each answer, retries included (default 60)",
    )
    g.add_argument(
        "--llm-api-key-env",
        metavar="NAME",
        help="environment variable holding the API key of --llm-endpoint / --vlm-endpoint (sent as a "
        "bearer token, never printed or saved)",
    )
    g.add_argument("--llm-retries", type=nonnegative_int, default=2, help="retries after an unfaithful answer")


def add_settings_arguments(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The flags of an explanation's settings, generated from :class:`ExplainConfig` (the one place of their
    names, help, ranges and defaults), shared by explain and explain-many; ``--threads`` beside them."""
    add_arguments(p, ExplainConfig, skip=(*VLM_SETTINGS, *skip))
    add_compute_arguments(p, device=False)


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        help="explain how a personalized model differs from its base, aspect by aspect",
        description="Sample the base and the personalized model on the same prompts and seeds (cached by model "
        "fingerprint, prompt, seed and sampler settings), embed the images with CLIP, decompose the mean paired "
        "difference onto the text directions of a concept bank, and score every aspect in [0, 1] with a bootstrap "
        "interval; an aspect is CHANGED when its interval lies above what the base reaches against itself with "
        "other seeds and the joint fit's interval lies above its own such null (the joint fit needs the aspect). "
        "Without --base it uses the toy world (preset 'toy'); a base of your own needs --clip, "
        "--concepts and --prompts. Prints a table; with --out writes OUT/explanation.json, the kept image pairs "
        "with where-it-changed maps (OUT/samples/) and OUT/report.html.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--lora",
        action="append",
        help="LoRA file (.safetensors), a folder holding pytorch_lora_weights.safetensors, or "
        "a shipped toy LoRA by name (toy:red, toy:darker; finexl env lists them). Repeat it to explain a stack "
        "(the LoRAs fused together; see --interaction)",
    )
    what.add_argument("--model", help="fine-tuned diffusers pipeline folder (a full fine-tune / DreamBooth)")
    p.add_argument(
        "--scale",
        type=finite_float,
        action="append",
        help="LoRA strength (default 1.0); with a stack, one for all or one per --lora, in their order",
    )
    p.add_argument(
        "--out", help="write OUT/explanation.json, the kept pairs and maps (OUT/samples/) and OUT/report.html"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing explanation and report in OUT")
    p.add_argument(
        "--no-report", action="store_true", help="with --out, skip OUT/report.html (finexl report makes it)"
    )
    add_settings_arguments(p)
    p.add_argument("--top", type=positive_int, default=None, help="print only the top N aspects")
    g = p.add_argument_group("concept proposals by a vision-language model (optional)")
    add_arguments(g, ExplainConfig, only=VLM_SETTINGS)
    add_narration_arguments(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "narrate",
        parents=[common],
        help="say an explanation.json in words again (another format, other aspects, or an LLM)",
        description="Render the sentences of an existing explanation.json: templated (default) or by an LLM whose "
        "answer is checked against the scores (falls back to the template when it fails).",
    )
    p.add_argument("explanation", help="an explanation.json written by finexl explain --out")
    p.add_argument("--write", action="store_true", help="store the sentences in the explanation file")
    p.add_argument(
        "--cache", dest="cache_dir", help="cache folder for LLM answers (default $FINEXL_CACHE or ~/.cache/finexl)"
    )
    p.add_argument("--device", default="cpu", help="torch device of a local --llm (default cpu)")
    add_narration_arguments(p)
    p.set_defaults(func=cmd_narrate)
