"""`VQAPipeline`: ask a saved mmft model a question about an image, as a transformers `Pipeline`.

transformers v5 removed its `visual-question-answering` task (`pipeline("visual-question-answering")` raises), so
mmft ships the pipeline itself and registers it as the task `mmft-vqa` on `import mmft`:

    >>> import mmft
    >>> from transformers import pipeline
    >>> vqa = pipeline("mmft-vqa", model="outputs/easy_vqa")
    >>> vqa(image="shape.png", question="what color is the shape?", top_k=3)
    [{'answer': 'red', 'score': 0.98}, ...]

Being a real `Pipeline`, it gets `device=`, `batch_size=` and iteration over datasets/generators for free.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForVisualQuestionAnswering, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

TASK = "mmft-vqa"


class VQAPipeline(Pipeline):
    """Image + question -> the `top_k` most likely answers with their scores."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("VQAPipeline needs the model's MMFTProcessor: pass processor= or a folder that has one")
        # The base class pads batches (batch_size > 1) with these two.
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor

    def _sanitize_parameters(self, top_k: int | None = None, timeout: float | None = None, **kwargs: Any):
        preprocess = {"timeout": timeout} if timeout is not None else {}
        postprocess = {"top_k": top_k} if top_k is not None else {}
        return preprocess, {}, postprocess

    def __call__(self, image: Any, question: str | list[str] | None = None, **kwargs: Any):
        """`image` (path, URL or PIL image) with `question`, or dicts / a list of dicts {"image", "question"}."""
        if question is None:
            inputs = image
        elif isinstance(image, list) and isinstance(question, list):
            inputs = [{"image": i, "question": q} for i, q in zip(image, question)]
        else:
            inputs = {"image": image, "question": question}
        return super().__call__(inputs, **kwargs)

    def preprocess(self, inputs: dict[str, Any], timeout: float | None = None) -> dict[str, torch.Tensor]:
        image = load_image(inputs["image"], timeout=timeout)
        return dict(self.processor(images=image, text=inputs["question"], return_tensors="pt"))

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(**model_inputs).logits}  # (B, num_answers)

    def postprocess(self, model_outputs: dict[str, torch.Tensor], top_k: int = 5) -> list[dict[str, Any]]:
        logits = model_outputs["logits"][0].float()
        # Soft-score (VQAv2) training scores each answer independently; single-answer training is a softmax.
        multi_label = self.model.config.problem_type == "multi_label_classification"
        scores = logits.sigmoid() if multi_label else logits.softmax(-1)
        top_k = min(top_k, scores.numel())
        values, ids = scores.topk(top_k)
        id2label = self.model.config.id2label
        return [{"answer": id2label[int(i)], "score": float(v)} for v, i in zip(values, ids)]


def register() -> None:
    """Make `pipeline("mmft-vqa", model=...)` work (called on `import mmft`)."""
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=VQAPipeline, pt_model=AutoModelForVisualQuestionAnswering)


__all__ = ["TASK", "VQAPipeline", "register"]
