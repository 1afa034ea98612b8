"""`mmft search`: the retrieval task's own verb (`RetrievalTask.verbs`), added to the `mmft` command by the registry.

mmft search --model outputs/scenes_retrieval --images photos/ --query "a red circle above a blue square"
mmft search --model outputs/scenes_retrieval --image scene.png --captions captions.txt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial


def _search(load_model: Callable, args: argparse.Namespace) -> int:
    from .search import Searcher, search_captions, search_images

    model, processor, _ = load_model(args.model, command="search")
    searcher = Searcher(model, processor, args.model, args.device, args.batch_size, args.max_length)
    try:
        if args.images:
            hits, report = search_images(searcher, args.images, args.query, args.top_k, args.rerank_k)
        else:
            hits, report = search_captions(searcher, args.image, args.captions, args.top_k, args.rerank_k)
    except (FileNotFoundError, ValueError) as error:
        print(f"mmft search: {error}", file=sys.stderr)
        return 2
    print(
        f"mmft search: embedded {report.embedded}, reused {report.reused} from the cache, dropped {report.dropped}",
        file=sys.stderr,
    )
    print("rank\tscore\tmatch\tsimilarity\titem")
    for rank, hit in enumerate(hits, start=1):
        score, match = (f"{hit.score:.4f}", f"{hit.match:.4f}") if hit.match is not None else ("-", "-")
        print(f"{rank}\t{score}\t{match}\t{hit.similarity:.4f}\t{hit.item}")
    return 0


def add_command(commands, device: str, load_model: Callable) -> None:
    """Add `mmft search` to the `mmft` command's subparsers; `load_model` is the command's (`mmft.loading`)."""
    search = commands.add_parser(
        "search", help="retrieval models: the best images for a text, or captions for an image"
    )
    search.add_argument("--model", required=True, help="a saved mmft retrieval folder or Hub repo id")
    search.add_argument("--images", help="text -> image: a folder of images (embedded once, cached inside it)")
    search.add_argument("--query", help="text -> image: the text to search for")
    search.add_argument("--image", help="image -> text: the image to describe")
    search.add_argument("--captions", help="image -> text: a text file with one caption per line (cached beside it)")
    search.add_argument("--top_k", type=int, default=5, help="results to print")
    search.add_argument("--rerank_k", type=int, default=16, help="candidates re-ranked by the matching head (0: off)")
    search.add_argument("--batch_size", type=int, default=32)
    search.add_argument("--max_length", type=int, default=64, help="tokens kept of each text")
    search.add_argument("--device", default=device)

    def check(args: argparse.Namespace) -> None:
        if not ((args.images and args.query) or (args.image and args.captions)):
            search.error("search needs --images FOLDER --query TEXT, or --image FILE --captions FILE")

    search.set_defaults(run=partial(_search, load_model), check=check)


__all__ = ["add_command"]
