"""The `karel-hf` console script: thin subcommands over the package's public functions.

Each subcommand lives in one `_cmd_*` function registered in `_build_parser`; heavy imports happen
inside the function so `karel-hf --help` stays fast. Subcommands raise; `main` runs them through
`karel_hf.errors.run_main`, the one place where an error becomes one line on stderr and an exit
status (2: the command line is wrong, 1: the work failed). `KAREL_HF_DEBUG=1` shows tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from karel_hf.errors import ArgumentParser, UsageError, run_main
from karel_hf.karel.corpus_config import CorpusConfig
from karel_hf.presets import corpora, preset_names
from karel_hf.utils import parse_overrides, writable_dir, writable_file


def _positive(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name}: must be a positive integer, got {value}")


def _cmd_verify_corpus(args) -> int:
    from karel_hf.karel.corpus import verify_jsonl

    return verify_jsonl(args.path, extended=not args.straight_line_only)


def _cmd_generate(args) -> int:
    from karel_hf.karel.corpus import export_jsonl

    _positive(args, "batch_size")
    try:
        config = CorpusConfig(**{f.name: getattr(args, f.name) for f in fields(CorpusConfig)})
    except ValueError as err:
        raise UsageError(str(err)) from None
    writable_file(args.output, "--output file")
    written = export_jsonl(config, args.output, batch_size=args.batch_size)
    print(f"wrote {written} programs x {config.num_pairs} pairs to {args.output}")
    return 0


def _add_corpus_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per CorpusConfig field (same name, same default)."""
    for f in fields(CorpusConfig):
        flag = f"--{f.name}"
        if f.default is MISSING:
            parser.add_argument(flag, type=int, required=True, help="number of programs to generate")
        elif isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", help="programs with if/ifelse/repeat/while")
        elif isinstance(f.default, tuple):
            parser.add_argument(flag, type=float, nargs=len(f.default), default=f.default,
                                help=f"one weight per action (default: {' '.join(map(str, f.default))})")
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f"default: {f.default}")


def _cmd_dataset_export(args) -> int:
    from karel_hf.data.builder import get_config
    from karel_hf.data.export import export_dataset

    _positive(args, "num_proc")
    try:
        overrides = parse_overrides(args.set, what="--set")
        get_config(args.config, **overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    writable_dir(args.output_dir, "--output_dir")
    out = export_dataset(args.config, args.output_dir, num_proc=args.num_proc, cache_dir=args.cache_dir, **overrides)
    print(f"wrote {out}")
    return 0


def _cmd_tokenizer_save(args) -> int:
    from karel_hf.tokenizer import build_tokenizer

    writable_dir(args.output_dir, "tokenizer folder")
    build_tokenizer(args.cells_per_token).save_pretrained(args.output_dir)
    print(f"wrote {args.output_dir}")
    return 0


def _cmd_push(args) -> int:
    from karel_hf import hub

    planners = {
        "dataset": lambda: hub.plan_dataset_push(args.src, args.repo_id, private=args.private),
        "model": lambda: hub.plan_model_push(args.src, args.repo_id, private=args.private,
                                             revision_prefix=args.revision_prefix,
                                             dataset_repo_id=args.dataset_repo_id),
        "metric": lambda: hub.plan_metric_push(args.src, args.repo_id, private=args.private),
        "traces": lambda: hub.plan_traces_push(args.src, args.repo_id, config_name=args.config_name,
                                               private=args.private),
        "viewer": lambda: hub.plan_viewer_push(args.src, args.repo_id, private=args.private,
                                               max_specs=args.max_specs, model_repo=args.model_repo),
    }
    if args.dry_run:
        writable_dir(args.dry_run, "--dry-run folder")
    plan = planners[args.kind]()
    if args.dry_run:
        out = hub.write_dry_run(plan, args.dry_run)
        for rev in plan.revisions:
            print(f"{plan.repo_type} {plan.repo_id}@{rev.revision}: {len(rev.files)} files -> {out / rev.revision}")
        print(f"dry run: nothing was sent; the plan is in {out / 'plan.json'}")
        return 0
    try:
        for published in hub.execute_plan(plan):
            print(f"published {plan.repo_type} {plan.repo_id}@{published.revision}: "
                  f"{published.num_files} files, commit {published.commit}")
    except hub.HubPushError as err:  # names the failed revision and the published ones
        raise ValueError(str(err)) from None
    return 0


def _cmd_view(args) -> int:
    from karel_hf.viewer.data import DEFAULT_MAX_SPECS, build_bundle
    from karel_hf.viewer.export import export_html

    if args.max_specs is not None and args.max_specs < 0:
        raise SystemExit(f"karel-hf view: --max_specs must be >= 0 (0: every test spec), got {args.max_specs}")
    max_specs = args.max_specs if args.max_specs is not None else (DEFAULT_MAX_SPECS if args.export else 0)
    try:
        bundle = build_bundle(args.run_dir, max_specs=max_specs or None)
    except ValueError as err:
        raise SystemExit(f"karel-hf view: {err}") from None
    if args.export:
        path = export_html(bundle, args.export)
        print(f"wrote {path} ({len(bundle['specs'])} specs, {len(bundle['checkpoints'])} checkpoints; "
              f"open it in a browser, no server needed)")
        return 0
    try:
        from karel_hf.viewer.app import launch
    except ImportError as err:
        raise SystemExit(f"karel-hf view: the Gradio app needs gradio ({err}): pip install 'karel_hf[viewer]', "
                         "or write a static page with --export DIR") from None
    try:
        demo, url = launch(bundle, host=args.host, port=args.port)
    except OSError as err:
        raise SystemExit(f"karel-hf view: cannot serve on {args.host}:{args.port} ({err}): pass a free --port") from None
    print(f"karel-hf view: serving {len(bundle['specs'])} specs x {len(bundle['checkpoints'])} checkpoints at {url} "
          "(Ctrl+C stops it)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()
    return 0


def _cmd_train(args) -> int:
    from karel_hf.training import train_command

    return train_command(args.train_args)


def _cmd_reproduce(args) -> int:
    from karel_hf.reproduce import reproduce_command

    return reproduce_command(args.reproduce_args)


def _build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="karel-hf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify-corpus", help="re-execute every program of a JSON-lines corpus on every input")
    p.add_argument("path", help="a corpus in the authors' JSON-lines format (code, input0..9, output0..9)")
    p.add_argument("--straight_line_only", action="store_true", help="reject programs with control flow")
    p.set_defaults(func=_cmd_verify_corpus)

    p = sub.add_parser("generate", help="write a seeded random corpus in the authors' JSON-lines format")
    _add_corpus_config_flags(p)
    p.add_argument("--output", required=True, help="the .jsonl file to write (replaced atomically)")
    p.add_argument("--batch_size", type=int, default=8192, help="programs generated at a time")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("dataset", help="the Karel corpus as a Hugging Face dataset")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    p = dsub.add_parser("export", help="write Parquet per split, the tokenizer and a dataset card")
    p.add_argument("--config", default="cpu",
                   help=f"paper (the paper's v1 corpus) or the corpus a preset defines: {', '.join(corpora())}")
    p.add_argument("--output_dir", required=True, help="folder to write (several configs may share it)")
    p.add_argument("--num_proc", type=int, default=None, help="worker processes (generation, Parquet shards)")
    p.add_argument("--cache_dir", default=None, help="datasets cache (default: HF_DATASETS_CACHE)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set train_size=1000 --set seed=7")
    p.set_defaults(func=_cmd_dataset_export)

    p = sub.add_parser("tokenizer", help="the word-level Karel tokenizer")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    p = tsub.add_parser("save", help="save the tokenizer (AutoTokenizer-loadable)")
    p.add_argument("output_dir")
    p.add_argument("--cells_per_token", type=int, choices=(1, 2), default=1,
                   help="grid cells per prompt token: 1 (the paper's) or 2 (two neighbouring cells of a row)")
    p.set_defaults(func=_cmd_tokenizer_save)

    p = sub.add_parser("push", help="publish a dataset export, a training run (step-N revisions), a metric Space, "
                       "trace datasets or a reproduction's trace viewer Space to the Hub (HF_ENDPOINT; token from "
                       "HF_TOKEN or `hf auth login`)")
    p.add_argument("kind", choices=["dataset", "model", "metric", "traces", "viewer"], help="what SRC holds")
    p.add_argument("src", help="export dir, training output dir, metric folder (or a packaged metric's name, "
                   "e.g. generation_accuracy), save_to_disk dir or (viewer) a `karel-hf reproduce` output dir")
    p.add_argument("--repo_id", required=True, help="<namespace>/<name> (for a metric, the namespace alone will do)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", metavar="DIR", default=None,
                   help="write the exact repository trees (DIR/<revision>/...) and plan.json instead of pushing")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision-prefix", "--revision_prefix", dest="revision_prefix", default="step-",
                   help="branch name of checkpoint-N is PREFIX + N (default: step-)")
    p.add_argument("--config_name", default="default", help="traces: the dataset config to push as")
    p.add_argument("--dataset_repo_id", default=None,
                   help="model: the dataset repository the run trained on (<namespace>/<name>), for the card's "
                   "`datasets:` and dataset link (default: the run's --dataset_id when it is a repo id)")
    p.add_argument("--max_specs", type=int, default=None,
                   help="viewer: test specs bundled, those with the most probe rows first (default 100; 0: all)")
    p.add_argument("--model_repo", default=None,
                   help="viewer: the model repository the run was pushed to (`karel-hf push model`), named in the "
                   "Space with each checkpoint's step-N revision")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("view", help="the trace viewer of a reproduction: a Gradio app on 127.0.0.1, or with "
                       "--export DIR one static HTML page (programs, robot states and probe predictions step by step)")
    p.add_argument("run_dir", help="a `karel-hf reproduce --output_dir` folder (results.json, evaluations/)")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="write DIR/index.html, self-contained (opens from file://), instead of serving the app")
    p.add_argument("--port", type=int, default=7860, help="port of the app (default: 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address of the app (default: 127.0.0.1, this machine only)")
    p.add_argument("--max_specs", type=int, default=None,
                   help="test specs to include, those with the most probe rows first (0: all; default: all for the "
                   "app, 100 for --export)")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("train", add_help=False, prefix_chars="+",
                       help=f"train a GPT-2 with transformers.Trainer: --preset {'|'.join(preset_names())} (or a "
                       "preset file) plus flag overrides (karel-hf train --help lists them)")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("reproduce", add_help=False, prefix_chars="+",
                       help="the whole paper: train, sweep checkpoints, analyse, plot, report "
                       "(karel-hf reproduce --help lists the flags)")
    p.add_argument("reproduce_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_reproduce)

    return parser


def _run(argv: list[str] | None) -> int:
    args = _build_parser().parse_args(argv)
    return args.func(args) or 0


def _prog(argv: list[str]) -> str:
    """'karel-hf' plus the subcommand words of argv (for the error line)."""
    words = ["karel-hf"]
    commands = {"verify-corpus", "generate", "dataset", "tokenizer", "push", "train", "reproduce"}
    if argv and argv[0] in commands:
        words.append(argv[0])
        if argv[0] in ("dataset", "tokenizer", "push") and len(argv) > 1 and not argv[1].startswith("-"):
            words.append(argv[1])
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Run one `karel-hf` command; returns the exit status (an error: one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_main(_prog(argv), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
