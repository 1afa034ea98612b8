"""Retrieval's `mmft demo` page (`RetrievalTask.demo`): text -> the best images of an uploaded folder, image -> the
best of a list of captions, through `mmft search`'s code (`mmft.tasks.retrieval.search`).

Loaded by `mmft demo` only (it imports Gradio, the `mmft[demo]` extra); the widgets it shares with the other tasks'
pages are `mmft.demo.widgets`.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ...demo.loaded import LoadedModel
from ...demo.widgets import HIT_COLUMNS, _image, _needs


def retrieval_page(loaded: LoadedModel) -> None:
    """Text -> the best images of an uploaded folder; image -> the best of a list of captions (as `mmft search`)."""
    from .search import Searcher, search_captions, search_images

    searcher = Searcher(loaded.model, loaded.processor, loaded.path, loaded.device)
    rerank_help = "re-rank the best N by the matching head (0: off)"
    with gr.Tabs():
        with gr.Tab("text → images", elem_id="text_to_images"):
            with gr.Row():
                with gr.Column():
                    folder = gr.File(file_count="directory", label="gallery: a folder of images", elem_id="gallery")
                    query = gr.Textbox(label="query", placeholder="a red circle above a blue square", elem_id="query")
                    with gr.Row():
                        image_k = gr.Slider(1, 20, value=5, step=1, label="results", elem_id="image_top_k")
                        image_rerank = gr.Slider(0, 64, value=16, step=1, label=rerank_help)
                    find_images = gr.Button("Search", variant="primary", elem_id="search_images")
                with gr.Column():
                    ranked = gr.Gallery(label="best images", columns=3, height="auto", elem_id="ranked_images")
                    image_hits = gr.Dataframe(headers=HIT_COLUMNS, interactive=False, elem_id="image_hits")
        with gr.Tab("image → captions", elem_id="image_to_captions"):
            with gr.Row():
                with gr.Column():
                    image = _image()
                    captions = gr.Textbox(label="candidate captions, one per line", lines=6, elem_id="captions")
                    with gr.Row():
                        caption_k = gr.Slider(1, 20, value=5, step=1, label="results", elem_id="caption_top_k")
                        caption_rerank = gr.Slider(0, 64, value=16, step=1, label=rerank_help)
                    find_captions = gr.Button("Rank captions", variant="primary", elem_id="search_captions")
                with gr.Column():
                    caption_hits = gr.Dataframe(headers=HIT_COLUMNS, interactive=False, elem_id="caption_hits")

    def images_for(files, text, top_k, rerank_k):
        _needs(folder=files or None, query=text)
        gallery = _gallery_folder(loaded.workdir, files)
        hits = _searched(search_images, searcher, str(gallery), text, int(top_k), int(rerank_k))
        rows = _rows(hits, lambda item: str(Path(item).relative_to(gallery)))
        return [(hit.item, f"{row[0]}. {row[4]}") for hit, row in zip(hits, rows)], rows

    def captions_for(image_path, lines, top_k, rerank_k):
        _needs(image=image_path, captions=lines)
        name = hashlib.sha256(lines.encode()).hexdigest()[:16]
        path = loaded.workdir / "captions" / f"{name}.txt"  # one file per list: `mmft search` caches beside it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lines, encoding="utf-8")
        return _rows(_searched(search_captions, searcher, image_path, str(path), int(top_k), int(rerank_k)), str)

    find_images.click(images_for, [folder, query, image_k, image_rerank], [ranked, image_hits])
    find_captions.click(captions_for, [image, captions, caption_k, caption_rerank], caption_hits)


def _searched(search: Callable, *args):
    try:
        return search(*args)[0]
    except (FileNotFoundError, ValueError) as error:
        raise gr.Error(str(error)) from None


def _rows(hits: list, item: Callable[[str], str]) -> list[list[str]]:
    """`mmft search`'s printed table: rank, score and P(match) ("-" when not re-ranked), similarity, item."""
    return [
        [
            str(rank),
            *((f"{hit.score:.4f}", f"{hit.match:.4f}") if hit.match is not None else ("-", "-")),
            f"{hit.similarity:.4f}",
            item(hit.item),
        ]
        for rank, hit in enumerate(hits, start=1)
    ]


def _gallery_folder(workdir: Path, files: list[str]) -> Path:
    """The uploaded images, copied under their own names into one folder per upload (the same upload: the same
    folder, so `mmft search`'s embedding cache inside it is reused by the next query)."""
    folder = workdir / "galleries" / hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:16]
    if not folder.is_dir():
        staging = folder.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for index, file in enumerate(sorted(files)):
            source = Path(file)
            target = staging / source.name
            if target.exists():  # two files of one name (from subfolders)
                target = staging / f"{source.stem}-{index}{source.suffix}"
            shutil.copy2(source, target)
        staging.rename(folder)
    return folder


__all__ = ["retrieval_page"]
