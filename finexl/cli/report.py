"""``finexl report``, ``finexl compare`` and ``finexl card``: pages made from explanation folders."""

from __future__ import annotations

import argparse

from finexl.report import model_card, write_compare, write_report


def cmd_report(args: argparse.Namespace) -> int:

    print(f"wrote {write_report(args.folder, out=args.out, overwrite=args.overwrite)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:

    print(f"wrote {write_compare(args.folders, args.out, overwrite=args.overwrite)}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:

    path = model_card(args.folder, overwrite=args.overwrite)
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path}")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="write the HTML report of an explanation folder (finexl explain --out writes one too)",
        description="One self-contained HTML file (images inlined, no script, no network): the verdict and "
        "sentences, every aspect's score with its interval and null threshold, where each CHANGED aspect changed "
        "(maps over the kept pairs), the image pairs, and the settings and fingerprints behind it.",
    )
    p.add_argument("folder", help="an explanation folder written by finexl explain --out")
    p.add_argument("--out", help="HTML file to write (default FOLDER/report.html)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file (FOLDER/report.html, the folder's own page, is always made again)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "compare",
        parents=[common],
        help="several explanations side by side on one page, to choose between LoRAs",
        description="Every aspect on one axis, each model's score and interval on it. Explanations made with "
        "different concept banks or CLIPs are refused: their scores are not on one scale.",
    )
    p.add_argument("folders", nargs="+", help="two or more explanation folders")
    p.add_argument("--out", required=True, help="HTML file to write, e.g. compare.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing page")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "card",
        parents=[common],
        help="a Markdown section for a model card: what the LoRA changes, with numbers and an image strip",
        description="Writes FOLDER/card.md (printed too) and FOLDER/card_strip.png, the strip of four kept pairs "
        "it shows; paste the section into the model's README and upload the strip beside it.",
    )
    p.add_argument("folder", help="an explanation folder written by finexl explain --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing card.md")
    p.set_defaults(func=cmd_card)
