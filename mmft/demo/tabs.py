"""One function per task that builds its demo page inside the current `gradio.Blocks`, and `DEMOS`, the registry of
them by task name. A new task adds its function and one line to `DEMOS`.

Each function gets the `LoadedModel` (the model loaded once, its processor and the task's pipeline) and answers
through the same code as the command line: the task's pipeline (`mmft predict`), `mmft.explain` (`mmft explain`)
and `mmft.tasks.retrieval.search` (`mmft search`). Images come in as the uploaded files, untouched (`type="filepath"`,
`image_mode=None`), so they are decoded as in training, by `mmft.image_utils.load_rgb`.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from .loaded import LoadedModel

HIT_COLUMNS = ["rank", "score", "match", "similarity", "item"]  # as `mmft search` prints them


def _image(label: str = "image", elem_id: str = "image") -> gr.Image:
    return gr.Image(type="filepath", image_mode=None, label=label, elem_id=elem_id, height=280)


def _needs(**values) -> None:
    missing = [name for name, value in values.items() if not (value.strip() if isinstance(value, str) else value)]
    if missing:
        raise gr.Error(f"missing: {', '.join(missing)}")


def _scored(results: list[dict], key: str) -> dict[str, float]:
    """A pipeline's scored labels as `gr.Label` shows them (label -> score, best first)."""
    return {result[key]: result["score"] for result in results}


# -- VQA ------------------------------------------------------------------------------------------------------------
def vqa_page(loaded: LoadedModel) -> None:
    """Image + question -> the top answers with their scores, and the bridge's attention over the image."""
    labels = loaded.model.config.num_labels
    with gr.Row():
        with gr.Column():
            image = _image()
            question = gr.Textbox(label="question", placeholder="what color is the shape?", elem_id="text")
            top_k = gr.Slider(1, max(labels, 1), value=min(5, labels), step=1, label="answers shown", elem_id="top_k")
            submit = gr.Button("Answer", variant="primary", elem_id="submit")
        with gr.Column():
            answers = gr.Label(label="answers", elem_id="answers")
            gr.Markdown("Where the question looks: the bridge's text-to-image attention, per layer (`mmft explain`)")
            heatmap = gr.Image(show_label=False, elem_id="heatmap")
            note = gr.Markdown(elem_id="note")

    def answer(image_path, text, shown):
        _needs(image=image_path, question=text)
        results = loaded.pipeline(image_path, question=text, top_k=int(shown))
        heat, message = _explanation(loaded, image_path, text)
        return _scored(results, "answer"), heat, message

    submit.click(answer, [image, question, top_k], [answers, heatmap, note])


def _explanation(loaded: LoadedModel, image_path: str, question: str) -> tuple[str | None, str]:
    """(PNG of `mmft explain`'s heat map, "") or (None, why there is none)."""
    from ..explain import explain, plot_explanation
    from ..image_utils import load_rgb

    picture = load_rgb(image_path)
    try:
        result = explain(loaded.model, loaded.processor, picture, question)
    except ValueError as error:  # a bridge without cross-attention
        return None, f"No heat map: {error}."
    out = loaded.workdir / "heatmaps" / f"{hashlib.sha256(f'{image_path}|{question}'.encode()).hexdigest()[:16]}.png"
    return str(plot_explanation(picture, question, result, out)), ""


# -- classification -------------------------------------------------------------------------------------------------
def classification_page(loaded: LoadedModel) -> None:
    """Image + text -> the probability of every label."""
    with gr.Row():
        with gr.Column():
            image = _image()
            text = gr.Textbox(label="text", placeholder="there is a red circle", elem_id="text")
            submit = gr.Button("Classify", variant="primary", elem_id="submit")
        with gr.Column():
            labels = gr.Label(label="label probabilities", elem_id="labels")

    def classify(image_path, statement):
        _needs(image=image_path, text=statement)
        return _scored(loaded.pipeline(image_path, text=statement), "label")

    submit.click(classify, [image, text], labels)


# -- retrieval ------------------------------------------------------------------------------------------------------
def retrieval_page(loaded: LoadedModel) -> None:
    """Text -> the best images of an uploaded folder; image -> the best of a list of captions (as `mmft search`)."""
    from ..tasks.retrieval.search import Searcher, search_captions, search_images

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


# -- captioning -----------------------------------------------------------------------------------------------------
def captioning_page(loaded: LoadedModel) -> None:
    """Image -> a caption, by greedy or beam search, up to a chosen length."""
    with gr.Row():
        with gr.Column():
            image = _image()
            decoding = gr.Radio(["greedy", "beam search"], value="greedy", label="decoding", elem_id="decoding")
            with gr.Row():
                beams = gr.Slider(2, 8, value=3, step=1, label="beams (beam search)", elem_id="num_beams")
                length = gr.Slider(1, 64, value=32, step=1, label="max new tokens", elem_id="max_new_tokens")
            submit = gr.Button("Caption", variant="primary", elem_id="submit")
        with gr.Column():
            caption = gr.Textbox(label="caption", interactive=False, elem_id="caption")

    def describe(image_path, how, num_beams, max_new_tokens):
        _needs(image=image_path)
        options = {"max_new_tokens": int(max_new_tokens), "num_beams": int(num_beams) if how == "beam search" else 1}
        return loaded.pipeline(image_path, **options)[0]["generated_text"]

    submit.click(describe, [image, decoding, beams, length], caption)


# task name -> the function that builds its page
DEMOS: dict[str, Callable[[LoadedModel], None]] = {
    "vqa": vqa_page,
    "classification": classification_page,
    "retrieval": retrieval_page,
    "captioning": captioning_page,
}

__all__ = ["DEMOS", "captioning_page", "classification_page", "retrieval_page", "vqa_page"]
