"""Auto classes for mmft tasks that transformers has no Auto class for (image-text classification, retrieval).

They behave like transformers' own: `AutoModelForImageTextClassification.from_pretrained(folder)` builds the class
registered for the folder's config type (done on `import mmft`), with no `trust_remote_code`.
"""

from __future__ import annotations

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping


class AutoModelForImageTextClassification(_BaseAutoModelClass):
    """Loads an image-text classification model (e.g. `MMFTForImageTextClassification`) from a saved folder."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForImageTextRetrieval(_BaseAutoModelClass):
    """Loads an image-text retrieval model (e.g. `MMFTForImageTextRetrieval`) from a saved folder."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


__all__ = ["AutoModelForImageTextClassification", "AutoModelForImageTextRetrieval"]
