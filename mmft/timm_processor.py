"""The HF image processor of a timm architecture, from timm's data config (used by processors and offline towers)."""

from __future__ import annotations

from transformers import ViTImageProcessor
from transformers.image_utils import PILImageResampling

_TIMM_RESAMPLE = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR}


def timm_image_processor(architecture: str, image_size: int | None = None, model_args: dict | None = None):
    """An HF image processor from timm's data config (mean, std, input size, interpolation) for `architecture`.

    timm's own eval transform centre-crops (crop_pct < 1); mmft resizes the whole image instead, so objects near
    the border (easy-VQA shapes) are never cut off.
    """
    import timm

    pretrained = timm.models.get_pretrained_cfg(architecture.split("/")[-1])
    data = timm.data.resolve_data_config(pretrained.to_dict() if pretrained else {}, use_test_size=True)
    size = image_size or (model_args or {}).get("img_size") or data["input_size"][-1]
    return ViTImageProcessor(
        do_resize=True,
        size={"height": int(size), "width": int(size)},
        resample=_TIMM_RESAMPLE.get(data.get("interpolation"), PILImageResampling.BICUBIC),
        image_mean=list(data["mean"]),
        image_std=list(data["std"]),
    )


__all__ = ["timm_image_processor"]
