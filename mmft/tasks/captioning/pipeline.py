"""`ImageToTextPipeline` (`mmft-image-to-text`): an image -> a caption."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Pipeline

from ...image_utils import load_rgb


class ImageToTextPipeline(Pipeline):
    """An image in, a caption out (`[{"generated_text": ...}]`), written by `generate()` with any of its flags
    (`max_new_tokens`, `num_beams`, `do_sample`, ... or `generate_kwargs={...}`)."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    text_key = None  # no text comes in: the prompt is fixed by the processor
    label_key = "generated_text"
    _GENERATE_FLAGS = ("max_new_tokens", "num_beams", "do_sample", "top_p", "top_k", "temperature", "use_cache")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "ImageToTextPipeline needs the model's MMFTCaptionProcessor: pass processor= or a folder that has one"
            )
        self.tokenizer = self.processor.tokenizer  # the decoder's: the base class pads batches with it
        self.image_processor = self.processor.image_processor

    def _sanitize_parameters(self, timeout: float | None = None, generate_kwargs: dict | None = None, **kwargs: Any):
        preprocess = {"timeout": timeout} if timeout is not None else {}
        generate = {**(generate_kwargs or {}), **{k: kwargs.pop(k) for k in self._GENERATE_FLAGS if k in kwargs}}
        if kwargs:
            raise TypeError(f"unknown argument(s) {sorted(kwargs)}; pass generate() options as generate_kwargs={{...}}")
        return preprocess, {"generate_kwargs": generate}, {}

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, torch.Tensor]:
        return dict(self.processor(images=load_rgb(image, timeout=timeout), return_tensors="pt"))

    def _forward(self, model_inputs: dict[str, torch.Tensor], generate_kwargs: dict | None = None):
        return {"sequences": self.model.generate(**model_inputs, **(generate_kwargs or {}))}  # (B, L)

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> list[dict[str, str]]:
        return [{"generated_text": self.processor.decode_captions(model_outputs["sequences"])[0]}]

    cli_arguments = (  # `mmft predict`'s flags for captioning models
        (("--max_new_tokens",), {"type": int, "default": 32, "help": "captioning: most tokens per caption"}),
        (("--num_beams",), {"type": int, "default": 1, "help": "captioning: beam search width (1: greedy)"}),
    )

    @staticmethod
    def cli_options(args) -> dict[str, Any]:
        return {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}

    def cli_lines(self, results: list[dict[str, str]]) -> list[str]:
        return [result["generated_text"] for result in results]

    def cli_record(self, results: list[dict[str, str]]) -> dict[str, Any]:
        """Like every task's record, the answer under `prediction` (here the caption, also under `caption`)."""
        return {"prediction": results[0]["generated_text"], "caption": results[0]["generated_text"]}


__all__ = [
    "ImageToTextPipeline",
]
