"""`ImageTextToTextPipeline` (`mmft-image-text-to-text`): an image and a prompt (a question) -> generated text.

transformers' own `image-text-to-text` pipeline builds its prompt with the processor's chat template and loads models
through `AutoModelForImageTextToText`, which serves mmft's captioning models; this pipeline has its call signature
(`pipe(image, text=...)`, `[{"generated_text": ...}]`) without either.
"""

from __future__ import annotations

from typing import Any

from ...image_utils import load_rgb
from ..captioning.pipeline import ImageToTextPipeline


class ImageTextToTextPipeline(ImageToTextPipeline):
    """An image and a question in, the generated answer out (`[{"generated_text": ...}]`), with any of `generate()`'s
    flags (`max_new_tokens`, `num_beams`, ... or `generate_kwargs={...}`). Inputs: `pipe(image, text=...)` (or
    `question=`), or dicts `{"image", "text"}` / a list of them."""

    text_key = "question"

    def __call__(self, image: Any, text: str | list[str] | None = None, **kwargs: Any):
        text = kwargs.pop(self.text_key, kwargs.pop("text", text))
        if isinstance(image, dict) or (isinstance(image, list) and image and isinstance(image[0], dict)):
            return super().__call__(image, **kwargs)
        if text is None:
            raise ValueError("ImageTextToTextPipeline needs a prompt: text= (or question=)")
        if isinstance(image, list):
            return super().__call__([{"image": i, "text": t} for i, t in zip(image, text)], **kwargs)
        return super().__call__({"image": image, "text": text}, **kwargs)

    def preprocess(self, inputs: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        text = inputs.get("text", inputs.get(self.text_key))
        pixels = self.processor.image_processor(load_rgb(inputs["image"], timeout=timeout), return_tensors="pt")
        # the prompt stays text: `_forward` lays out each batch itself (the decoder's prompt is padded inside)
        return {"pixel_values": pixels["pixel_values"], "prompts": [text]}

    def _forward(self, model_inputs: dict[str, Any], generate_kwargs: dict | None = None):
        prompts = model_inputs["prompts"]
        prompts = [p for group in prompts for p in group] if prompts and isinstance(prompts[0], list) else prompts
        features = {**self.processor.question_features(prompts), **self.processor.generation_features(prompts)}
        features = {key: value.to(self.device) for key, value in features.items()}
        pixel_values = model_inputs["pixel_values"].to(self.device)
        sequences = self.model.generate(pixel_values=pixel_values, **features, **(generate_kwargs or {}))
        return {"answers": self.processor.decode_answers(sequences, features["input_ids"].shape[1])}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, str]]:
        answers = model_outputs["answers"]  # one example's: the batch's list, or its own string once unbatched
        return [{"generated_text": answers if isinstance(answers, str) else answers[0]}]

    def cli_record(self, results: list[dict[str, str]]) -> dict[str, Any]:
        """Like every task's record, the answer under `prediction` (also under `generated_text`)."""
        return {"prediction": results[0]["generated_text"], "generated_text": results[0]["generated_text"]}


__all__ = ["ImageTextToTextPipeline"]
