"""``finexl explain-many``, ``finexl index rebuild``, ``finexl search`` and ``finexl show``."""

from __future__ import annotations

import argparse

from finexl.cli.common import add_compute_arguments, nonnegative_float, positive_float, positive_int, set_threads
from finexl.cli.explain import add_settings_arguments, config_from_args
from finexl.collection import explain_many, rebuild_index, search, show


def cmd_explain_many(args: argparse.Namespace) -> int:

    set_threads(args)
    cfg = config_from_args(args)
    result = explain_many(
        args.manifest,
        args.out,
        cfg,
        executor=args.executor,
        ray_address=args.ray_address,
        num_cpus_per_task=args.num_cpus_per_task,
        num_gpus_per_task=args.num_gpus_per_task,
        report=not args.no_report,
        progress=not args.quiet,
    )
    for model_id, error in result.failed.items():
        print(f"failed: {model_id}: {error}")
    print(result.summary())
    return 1 if result.failed else 0


def cmd_index_rebuild(args: argparse.Namespace) -> int:

    print(f"indexed {rebuild_index(args.folder)} models into {args.folder}/index.sqlite")
    return 0


def cmd_search(args: argparse.Namespace) -> int:

    set_threads(args)
    hits = search(args.index, args.query, top=args.top, filters=args.aspect or [], device=args.device)
    if not hits:
        print("no model passes the filters")
        return 0
    print(f"{'rank':<4} {'id':<24} {'score':>6}  90% interval      null   match")
    for rank, h in enumerate(hits, start=1):
        thr = "" if h.threshold is None else f"{h.threshold:.3f}"
        print(
            f"{rank:<4} {h.id:<24} {h.score:6.3f}  [{h.interval[0]:6.3f}, {h.interval[1]:6.3f}]  {thr:>5}  "
            f"{'yes' if h.match else '-'}"
        )
        for line in (h.sentences or "").splitlines()[:3]:
            print(f"     {line}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:

    print(show(args.index, args.id))
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:

    p = sub.add_parser(
        "explain-many",
        parents=[common],
        help="explain every model of a manifest against shared base images, into folders and a searchable index",
        description="MANIFEST is JSONL or CSV with columns id, path (a LoRA file or folder, or a fine-tuned "
        "pipeline folder; a list of LoRAs, ';'-separated in CSV, is a stack), and optionally base, scale (one "
        "per LoRA of a stack, or one for all), tags (';'-separated in CSV); relative paths are read from the "
        "manifest's folder. "
        "--interaction explains each stack's LoRAs alone too (the other rows are unaffected); a DreamBooth model "
        "is explained on its instance prompt and its leak on its class prompt (see explain --trigger). The base's"
        " images, null images, embeddings and text directions are made once per base. Each model goes to "
        "OUT/models/ID/ (explanation.json, samples, report.html, embeddings.npz), written whole, and into "
        "OUT/index.sqlite. Rerun to resume: finished models are skipped unless their files or the settings "
        "changed. A model that fails is recorded with its error and the run goes on; the exit status is 1 if any "
        "failed. A duplicate id or an unknown column stops the run before any work.",
    )
    p.add_argument("manifest", help="manifest file (.jsonl or .csv)")
    p.add_argument("--out", required=True, help="collection folder (models/, bases/, index.sqlite)")
    p.add_argument("--no-report", action="store_true", help="skip each model's report.html")
    add_settings_arguments(p)
    g = p.add_argument_group("executor")
    g.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="run models one after another here (default), or as Ray tasks (pip install -e '.[ray]')",
    )
    g.add_argument(
        "--ray-address",
        help="an existing Ray cluster, e.g. ray://head:10001 or auto (default: start one on this machine); the "
        "image cache (--cache) must then be on a filesystem every node shares",
    )
    g.add_argument("--num-cpus-per-task", type=positive_float, default=1.0, help="CPUs per model task (default 1)")
    g.add_argument("--num-gpus-per-task", type=nonnegative_float, default=0.0, help="GPUs per model task (default 0)")
    p.set_defaults(func=cmd_explain_many)

    p = sub.add_parser("index", parents=[common], help="the SQLite index of an explain-many folder")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    q = isub.add_parser("rebuild", parents=[common], help="make OUT/index.sqlite again from the model folders")
    q.add_argument("folder", help="an explain-many --out folder")
    q.set_defaults(func=cmd_index_rebuild)

    p = sub.add_parser(
        "search",
        parents=[common],
        help="rank the models of an index by how far they move their outputs toward a description",
        description="The query becomes a direction in CLIP's space (f(query), over the run's prompts) and each "
        "model is scored by how far its images moved along it, with a bootstrap interval and the same null test "
        "as explain; 'match' means the interval lies above the null threshold. Matches come first, by score.",
    )
    p.add_argument("query", help='what the model should do, e.g. "makes everything watercolour"')
    p.add_argument("--index", required=True, help="an explain-many --out folder")
    p.add_argument(
        "--aspect",
        action="append",
        metavar="FILTER",
        help="keep models whose stored scores pass: ASPECT (CHANGED), ASPECT=WORD (CHANGED toward it), "
        "ASPECT>X or ASPECT<X (score), ASPECT@S (a weight sweep's onset at scale S or below: CHANGED by S; "
        "explain-many --scales), ASPECT:VERDICT (a stack's interaction on the aspect: additive, strengthened, "
        "weakened, new, none; explain-many --interaction); repeatable",
    )
    p.add_argument("--top", type=positive_int, default=10, help="models to list (default 10)")
    add_compute_arguments(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("show", parents=[common], help="print one model of an index: its table, sentences or error")
    p.add_argument("id", help="the model's id in the manifest")
    p.add_argument("--index", required=True, help="an explain-many --out folder")
    p.set_defaults(func=cmd_show)
