"""transformers `Pipeline`s of the mmft tasks, registered on `import mmft` under each task's `pipeline_task` name.

transformers v5 removed its `visual-question-answering` task, and has none for image-text classification or
matching, so mmft ships them:

    >>> import mmft
    >>> from transformers import pipeline
    >>> vqa = pipeline("mmft-vqa", model="outputs/easy_vqa")
    >>> vqa(image="shape.png", question="what color is the shape?", top_k=3)
    [{'answer': 'red', 'score': 0.98}, ...]
    >>> classify = pipeline("mmft-image-text-classification", model="outputs/easy_vqa_entailment")
    >>> classify(image="shape.png", text="there is a red circle")
    [{'label': 'true', 'score': 0.99}, {'label': 'false', 'score': 0.01}]
    >>> match = pipeline("mmft-image-text-retrieval", model="outputs/scenes_retrieval")
    >>> match(image="scene.png", text="a red circle above a blue square")
    [{'label': 'match', 'score': 0.97}, {'label': 'no match', 'score': 0.03}]
    >>> caption = pipeline("mmft-image-to-text", model="outputs/scenes_captioning")
    >>> caption("scene.png", max_new_tokens=24)
    [{'generated_text': 'a small red circle at the top left'}]

Being real `Pipeline`s, they get `device=`, `batch_size=` and iteration over datasets/generators for free. Images
(paths, PIL images, URLs, base64, `datasets` rows) are decoded exactly as in training (`mmft.image_utils.load_rgb`:
transparency on white, EXIF rotation, 16-bit rescaled).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline

from .image_utils import load_rgb
from .inference.scores import is_multi_label, label_scores, top_scores


class ImageTextPipeline(Pipeline):
    """An image and a text in, the model's scored labels out (`top_k` of them)."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    text_key = "text"  # the keyword the text comes in under
    label_key = "label"  # the key each result names its label with

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                f"{type(self).__name__} needs the model's MMFTProcessor: pass processor= or a folder that has one"
            )
        # The base class pads batches (batch_size > 1) with these two.
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor

    def _sanitize_parameters(self, top_k: int | None = None, timeout: float | None = None, **kwargs: Any):
        preprocess = {"timeout": timeout} if timeout is not None else {}
        postprocess = {"top_k": top_k} if top_k is not None else {}
        return preprocess, {}, postprocess

    def __call__(self, image: Any, text: str | list[str] | None = None, **kwargs: Any):
        """`image` (path, URL or PIL image) with its text, or dicts / a list of dicts {"image", text_key}."""
        text = kwargs.pop(self.text_key, text)
        if text is None:
            inputs = image
        elif isinstance(image, list) and isinstance(text, list):
            inputs = [{"image": i, self.text_key: t} for i, t in zip(image, text)]
        else:
            inputs = {"image": image, self.text_key: text}
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs: dict[str, Any], timeout: float | None = None) -> dict[str, torch.Tensor]:
        image = load_rgb(inputs["image"], timeout=timeout)
        return dict(self.processor(images=image, text=inputs[self.text_key], return_tensors="pt"))

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(**model_inputs).logits}  # (B, num_labels)

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int = 5) -> list[dict[str, Any]]:
        # Multi-label (and VQAv2 soft-score) models score each label independently; single-label ones by softmax.
        scores = label_scores(model_outputs["logits"][0], is_multi_label(self.model.config))
        values, ids = top_scores(scores, top_k)
        id2label = self.model.config.id2label
        return [{self.label_key: id2label[int(i)], "score": float(v)} for v, i in zip(values, ids)]

    # -- what `mmft predict` asks of the pipeline ------------------------------------------------------------------
    # its flags (argparse `add_argument` arguments), added to `mmft predict` for every registered task's pipeline
    cli_arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
        (("--top_k",), {"type": int, "default": 5, "help": "answers / labels shown (VQA, classification)"}),
    )

    @staticmethod
    def cli_options(args) -> dict[str, Any]:
        return {"top_k": args.top_k}

    def cli_lines(self, results: list[dict[str, Any]]) -> list[str]:
        """What `mmft predict --image` prints: a score and a label per line."""
        return [f"{result['score']:.4f}\t{result[self.label_key]}" for result in results]

    def cli_record(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """What `mmft predict --dataset` adds to a row's JSON record."""
        return {"prediction": results[0][self.label_key], f"{self.label_key}s_scored": results}


__all__ = ["ImageTextPipeline", "load_rgb"]
