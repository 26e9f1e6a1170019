"""zoo fetch and zoo cache: published weights into the cache, and what the cache holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli._common import Subcommands


def _cmd_fetch(args: argparse.Namespace) -> int:
    from zoo.weights import fetch_weights

    print(fetch_weights(args.name, progress=False if args.no_progress else None))
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from zoo.weights import cache_contents, clear_cache

    mib = 2**20
    if args.action == "clear":
        cleared = clear_cache()
        print(f"removed {cleared.files} file(s), {cleared.size / mib:.1f} MiB, from {cleared.root}")
        print(_hub_note(cleared.hub_cache))
        return 0
    contents = cache_contents()
    for entry in contents.entries:
        print(f"{entry.size / mib:10.1f} MiB  {entry.key}")
    print(f"{len(contents.entries)} file(s), {contents.size / mib:.1f} MiB, in {contents.root}")
    print(_hub_note(contents.hub_cache))
    return 0


def _hub_note(hub_cache: Path) -> str:
    # hub weights live in the Hugging Face cache, shared with other libraries: shown where, never cleared here
    return f"hub weights are in the Hugging Face cache {hub_cache} (manage it with `hf cache`)"


def add_parsers(sub: Subcommands) -> None:
    """Add this module's commands to the `zoo` parser's subcommands."""
    p = sub.add_parser("fetch", help="download a model's published weights into the cache (hub: the HF cache)")
    p.add_argument("name", help="NAME or NAME.TAG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser(
        "cache",
        help="list or clear zoo's cache of URL weights (ZOO_CACHE_DIR)",
        description="zoo's cache of weights downloaded from URLs (ZOO_CACHE_DIR).\n"
        "Weights from the Hugging Face hub are in the Hugging Face cache instead, shared with other\n"
        "libraries: zoo shows where it is and never clears it (manage it with `hf cache`).",
        epilog="actions:\n"
        "  list   each cached file with its size, then the count, the total size and the cache's folder\n"
        "  clear  delete the cached files (they are downloaded again when next needed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("list", "clear"), help="list or clear: see below")
    p.set_defaults(func=_cmd_cache)
