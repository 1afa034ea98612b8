"""`MMFTForGenerativeVQA`: an image and a prompt (a question) in, generated text (the answer) out.

It is the captioning model, `MMFTForConditionalGeneration`, unchanged: its forward and `generate()` (greedy, beam
search, sampling, with the KV cache) already take the text tower's prompt per row (`text_input_ids`) and any decoder
tokens after the start token (`input_ids`), and its loss covers the tokens whose label is not -100. The subclass
only gives prompted generation its own name, Auto class and pipeline: a saved model's `architectures` names the task
it belongs to (`mmft.tasks.task_for_model`), so a captioning folder and a generative VQA folder each load with their
own task, pipeline and card, and `AutoModelForImageTextToText` keeps serving captioning models.
"""

from __future__ import annotations

from ...auto import new_auto_class
from ..captioning.modeling import MMFTForConditionalGeneration
from .pipeline import ImageTextToTextPipeline

AutoModelForGenerativeVQA = new_auto_class(
    "AutoModelForGenerativeVQA",
    "Builds the generative VQA head (`MMFTForGenerativeVQA`) of a saved mmft model: `from_pretrained(folder)`.",
)


class MMFTForGenerativeVQA(MMFTForConditionalGeneration):
    """
    Answers a question about an image by generating the answer: the text tower reads the question, the bridge fuses
    it with the image into the decoder's prefix, and the decoder reads `[start] [prefix] question [separator]` and
    writes the answer (`MMFTPromptProcessor` lays the rows out and masks the loss to the answer tokens).

    Example:

    ```python
    >>> model = MMFTForGenerativeVQA.from_vision_text_pretrained(vision="efficientnet_lite0", text="minilm",
    ...     decoder="smollm2", num_query_tokens=8)
    >>> inputs = processor(images=image, text="what color is the shape?")
    >>> ids = model.generate(**inputs, max_new_tokens=8)
    >>> processor.decode_answers(ids, inputs["input_ids"].shape[1])
    ```
    """

    auto_class, pipeline_task, pipeline_class = (
        AutoModelForGenerativeVQA,
        "mmft-image-text-to-text",
        ImageTextToTextPipeline,
    )


__all__ = ["AutoModelForGenerativeVQA", "MMFTForGenerativeVQA"]
