"""Loading a final model saved as a LoRA adapter (`--save_merged false`): the base rebuilt, then peft's adapter.

The adapter folder holds the adapter weights, the fully trained modules and the mmft config; a tower trained with
LoRA or frozen comes back from where it was pretrained (`config.<kind>_pretrained_from`).
"""

from __future__ import annotations

from ..lora import tower_names
from ..towers import TOWER_SPECS


def load_adapter_model(path: str, merge: bool = False):
    """
    Load a folder (or Hub repo) saved as a LoRA adapter: rebuild the base model from the saved mmft config, with
    each LoRA/frozen tower's weights from where it was pretrained, then load the adapter with peft.
    Returns the `PeftModel`, or with `merge=True` a plain mmft model with the adapters folded in.
    """
    from peft import PeftConfig, PeftModel

    from ..configuration_mmft import MMFTConfig
    from ..safe_loading import require_safetensors_adapter
    from ..tasks import task_for_model

    require_safetensors_adapter(path)  # before peft could fall back to a pickled adapter_model.bin
    peft_config = PeftConfig.from_pretrained(path)
    config = MMFTConfig.from_pretrained(path)
    model = task_for_model(config).model_class(config)
    saved = set(peft_config.modules_to_save or [])
    for kind, qualified in tower_names(model).items():
        parent, _, attribute = qualified.rpartition(".")
        if any(name.split(".")[-1] == attribute for name in saved):  # fully trained: its weights are in the adapter
            continue
        spec = TOWER_SPECS[kind]
        source = getattr(config, spec.source_field)
        if not source:
            raise ValueError(
                f"{path}: the {kind} tower was trained from scratch with LoRA or frozen, so its base weights are not "
                "in the adapter; save such runs merged (--save_merged true)"
            )
        # the tower with the pretrained weights it was built from
        setattr(model.get_submodule(parent), attribute, spec.load(source, getattr(config, spec.config_field)))
    peft_model = PeftModel.from_pretrained(model, path)
    return peft_model.merge_and_unload() if merge else peft_model


__all__ = ["load_adapter_model"]
