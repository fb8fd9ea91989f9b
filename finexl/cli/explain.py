"""``finexl explain`` and ``finexl narrate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from finexl.cli.common import (
    add_compute_arguments,
    add_sampler_arguments,
    finite_float,
    nonnegative_int,
    parse_list,
    positive_float,
    positive_int,
    sampler_config,
    samples_arg,
    set_threads,
)
from finexl.errors import InputError
from finexl.utils import writing


def config_from_args(args: argparse.Namespace, **more):
    """The ``ExplainConfig`` of the settings :func:`add_settings_arguments` added (``more``: the rest)."""
    from finexl.explanation.pipeline import ExplainConfig

    return ExplainConfig(
        preset=args.preset, base=args.base, prompts=args.prompts, direction_prompts=args.direction_prompts,
        samples=args.samples, clip=args.clip, concepts=args.concepts, method=args.method, seed=args.seed,
        auto_round=args.auto_round, auto_cap=args.auto_cap, auto_error=args.auto_error,
        auto_verdicts=args.auto_verdicts,
        n_bootstrap=args.bootstrap, null=not args.no_null, allow_other_base=args.allow_other_base,
        cache_dir=args.cache, height=args.height, width=args.width, device=args.device, dtype=args.dtype,
        compile=args.compile, sampler=sampler_config(args), **more,
    )  # fmt: skip


def cmd_explain(args: argparse.Namespace) -> int:
    from finexl.explanation.pipeline import ExplainPipeline
    from finexl.narrate.templates import check_aspects

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
    cfg = config_from_args(
        args, vlm=args.vlm, vlm_endpoint=args.vlm_endpoint, vlm_model=args.vlm_model, vlm_pairs=args.vlm_pairs,
        api_key_env=args.llm_api_key_env, report_pairs=args.report_pairs if out is not None else 0,
    )  # fmt: skip
    pipeline = ExplainPipeline(cfg, progress=not args.quiet)  # checks every setting and file up front
    check_aspects(pipeline.bank.aspects + (["proposed"] if args.vlm or args.vlm_endpoint else []), asked)
    explanation = pipeline(lora=args.lora, model=args.model, scale=args.scale)
    print(explanation.table(top=args.top))
    if out is not None:  # saved before the optional sentences, which may fail or wait on a network
        explanation.save(out, report=False, overwrite=True)
    _narrate(explanation, args, asked)
    if out is not None:  # again, with the sentences
        print(f"wrote {explanation.to_json(out / 'explanation.json')}")
        if not args.no_report:
            from finexl.report import write_report

            print(f"wrote {write_report(out, overwrite=True)}")
    return 0


def _narrate(explanation, args: argparse.Namespace, asked: list[str] | None):
    from finexl.narrate.narrator import narrate_explanation

    narration = narrate_explanation(
        explanation, args.format, asked, llm=args.llm, llm_endpoint=args.llm_endpoint, llm_model=args.llm_model,
        timeout=args.llm_timeout, retries=args.llm_retries, cache_dir=args.cache, device=args.device,
        api_key_env=args.llm_api_key_env,
    )  # fmt: skip
    explanation.sentences = narration.to_json()
    print()
    print(narration.text)
    if narration.note:
        print(f"note: {narration.note}")
    return narration


def cmd_narrate(args: argparse.Namespace) -> int:
    from finexl.explanation.result import Explanation
    from finexl.narrate.templates import check_aspects

    path = Path(args.explanation)
    explanation = Explanation.from_json(path)
    asked = parse_list(args.aspects, "--aspects")
    check_aspects([a.aspect for a in explanation.aspects], asked)
    _narrate(explanation, args, asked)
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
    g.add_argument("--llm-timeout", type=positive_float, default=60.0,
                   help="deadline in seconds for each answer, retries included (default 60)")  # fmt: skip
    g.add_argument("--llm-api-key-env", metavar="NAME",
                   help="environment variable holding the API key of --llm-endpoint / --vlm-endpoint (sent as a "
                   "bearer token, never printed or saved)")  # fmt: skip
    g.add_argument("--llm-retries", type=nonnegative_int, default=2, help="retries after an unfaithful answer")


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """The settings of an explanation, shared by explain and explain-many (see ExplainConfig)."""
    from finexl.explanation.decompose import ESTIMATORS
    from finexl.explanation.pipeline import ExplainConfig as Defaults  # the one place of every default
    from finexl.explanation.sequential import VERDICT_RULES

    p.add_argument("--base", help="base pipeline folder (default: the toy preset's, data/toy_sd)")
    p.add_argument("--preset", choices=["toy"], help="take unset parts from a preset (default: toy without --base)")
    p.add_argument("--prompts", help="UTF-8 file, one prompt per line (the toy preset: its neutral prompts)")
    p.add_argument("--samples", type=samples_arg, default=Defaults.samples,
                   help="'auto' (the default) or a number of image pairs, pair i with seed --seed + i and the "
                        "prompts cycled. 'auto' draws rounds of --auto-round pairs and stops when every verdict and "
                        "the order of the CHANGED aspects is settled: each has at most --auto-error chance of "
                        "differing from --auto-cap fixed pairs' (see --auto-verdicts), and the false-positive rate "
                        "stays within 1 / (1 - error) of theirs (docs/speed.md)")  # fmt: skip
    p.add_argument("--auto-round", type=positive_int, default=Defaults.auto_round,
                   help="--samples auto: pairs per round (default %(default)s)")  # fmt: skip
    p.add_argument("--auto-cap", type=positive_int, default=Defaults.auto_cap,
                   help="--samples auto: the most pairs (default %(default)s)")  # fmt: skip
    p.add_argument("--auto-error", type=positive_float, default=Defaults.auto_error,
                   help="--samples auto: accepted chance that a verdict differs from --auto-cap pairs' "
                        "(default %(default)s)")  # fmt: skip
    p.add_argument("--auto-verdicts", choices=VERDICT_RULES, default=Defaults.auto_verdicts,
                   help="--samples auto: 'each' (default) holds every unchanged verdict to --auto-error chance of "
                        "differing from --auto-cap pairs'; 'share' only their expected share: 0.43 of the pairs "
                        "instead of 0.70 on the benchmark, but it missed the strongest change of 18 of 68 models "
                        "(docs/speed.md)")  # fmt: skip
    p.add_argument(
        "--direction-prompts",
        help="UTF-8 file of prompts to build the concept directions from (default: --prompts). For a DreamBooth "
        "model sampled on its instance prompt ('a sks dog'), give the class prompt ('a dog'): the text encoder has "
        "no meaning for the identifier",
    )
    p.add_argument("--clip", help="CLIP: a transformers CLIP folder, open_clip:MODEL:CHECKPOINT, or 'toy'")
    p.add_argument("--concepts", help="concept bank JSON file, or 'toy' / 'real' for the shipped banks")
    p.add_argument("--method", default=Defaults.method, choices=list(ESTIMATORS),
                   help="decomposition (default %(default)s; see finexl/explanation/decompose.py)")  # fmt: skip
    p.add_argument("--allow-other-base", action="store_true",
                   help="explain a LoRA that finexl recorded as trained on another base")  # fmt: skip
    p.add_argument("--seed", type=nonnegative_int, default=Defaults.seed,
                   help="seed of the first pair; pair i uses seed + i (default %(default)s)")  # fmt: skip
    p.add_argument("--bootstrap", type=positive_int, default=Defaults.n_bootstrap,
                   help="bootstrap resamples (default %(default)s)")  # fmt: skip
    p.add_argument("--no-null", action="store_true", help="skip the null calibration (no CHANGED verdicts)")
    p.add_argument("--cache", help="image and direction cache folder (default $FINEXL_CACHE or ~/.cache/finexl)")
    add_sampler_arguments(p, Defaults().sampler)
    p.add_argument("--height", type=positive_int, help="image height (default: the base's native size)")
    p.add_argument("--width", type=positive_int, help="image width (default: the base's native size)")
    p.add_argument("--dtype", default=Defaults.dtype, choices=["float32", "float16", "bfloat16"],
                   help="dtype of the diffusion pipelines (default float32; float16/bfloat16 on a GPU)")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser: the first batch waits for the compile (most of a minute on a "
                        "CPU, seconds once torch's compile cache holds it), later batches sample faster. Meant for "
                        "long runs on a GPU: on 2 CPU cores it made explain and explain-many slower "
                        "(docs/speed.md). On a CPU it needs a C++ compiler")  # fmt: skip
    add_compute_arguments(p)


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    from finexl.explanation.pipeline import ExplainConfig as Defaults  # the one place of every default

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
    what.add_argument("--lora", help="LoRA file (.safetensors), a folder holding pytorch_lora_weights.safetensors, or "
                      "a shipped toy LoRA by name (toy:red, toy:darker; finexl env lists them)")  # fmt: skip
    what.add_argument("--model", help="fine-tuned diffusers pipeline folder (a full fine-tune / DreamBooth)")
    p.add_argument("--scale", type=finite_float, default=1.0, help="LoRA strength (default 1.0)")
    p.add_argument(
        "--out", help="write OUT/explanation.json, the kept pairs and maps (OUT/samples/) and OUT/report.html"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing explanation and report in OUT")
    p.add_argument(
        "--no-report", action="store_true", help="with --out, skip OUT/report.html (finexl report makes it)"
    )
    p.add_argument("--report-pairs", type=nonnegative_int, default=Defaults.report_pairs,
                   help="pairs kept in OUT/samples for the report, with where-it-changed maps (default %(default)s; "
                   "0 keeps none)")  # fmt: skip
    add_settings_arguments(p)
    p.add_argument("--top", type=positive_int, default=None, help="print only the top N aspects")
    g = p.add_argument_group("concept proposals by a vision-language model (optional)")
    g.add_argument("--vlm", help="local transformers vision-language model folder")
    g.add_argument(
        "--vlm-endpoint", help="OpenAI-compatible API base URL with image input, e.g. http://localhost:8000/v1"
    )
    g.add_argument("--vlm-model", help="model name at --vlm-endpoint")
    g.add_argument("--vlm-pairs", type=positive_int, default=Defaults.vlm_pairs,
                   help="image pairs shown to the VLM (default %(default)s)")  # fmt: skip
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
    p.add_argument("--cache", help="cache folder for LLM answers (default $FINEXL_CACHE or ~/.cache/finexl)")
    p.add_argument("--device", default="cpu", help="torch device of a local --llm (default cpu)")
    add_narration_arguments(p)
    p.set_defaults(func=cmd_narrate)
