"""The towers of an mmft model: the modules (`mmft.towers.modules`) and the kinds as specs in a registry
(`mmft.towers.specs.TOWER_SPECS`: vision, text, decoder), which say how each kind is named, configured, built, loaded,
described and adapted with LoRA."""

from ..offline_assets import find_asset, resolve_name
from .modules import (
    TIMM_SCRATCH_PREFIX,
    BatchShapes,
    DecoderTower,
    TextTower,
    TowerOutput,
    VisionTower,
    transformer_tower_flops,
)
from .specs import (
    TOWER_SPECS,
    DecoderSpec,
    TextSpec,
    TowerSpec,
    TowerUnavailable,
    VisionSpec,
    build_tower,
    decoder_config_from_name,
    load_pretrained_tower,
    present_specs,
    text_config_from_name,
    tower_spec,
    vision_config_from_name,
)

__all__ = [
    "TIMM_SCRATCH_PREFIX",
    "TOWER_SPECS",
    "BatchShapes",
    "DecoderSpec",
    "DecoderTower",
    "TextSpec",
    "TextTower",
    "TowerOutput",
    "TowerSpec",
    "TowerUnavailable",
    "VisionSpec",
    "VisionTower",
    "build_tower",
    "decoder_config_from_name",
    "find_asset",
    "load_pretrained_tower",
    "present_specs",
    "resolve_name",
    "text_config_from_name",
    "tower_spec",
    "transformer_tower_flops",
    "vision_config_from_name",
]
