"""Resume restores every weight of every tower family, through the recipe's own training path, or refuses.

transformers renames some towers' weights between the names a checkpoint holds and the live module names (an HF
ViT's `encoder.layer.0.attention.attention.query` is `layers.0.attention.q_proj` in memory; DINOv2 likewise), and
`from_pretrained` converts them, but the HF Trainer's resume loads the file with a plain `load_state_dict`, so such
weights silently kept their fresh values. Each family here: a run of 6 steps (checkpoints at 3 and 6) and a resume
of its checkpoint-3 in another output_dir, in this process through `mmft.training.run`; the resumed run must end
bit-identical. Dropout is on everywhere, so a lost RNG state shows too. A checkpoint with a missing or an unexpected
key is refused, naming the key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from helpers_data import make_imagefolder
from helpers_launch import recipe_argv, save_tiny_text_tower, save_tiny_vision_tower, weights
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainingArguments

from mmft.arguments import parse_recipe_args
from mmft.training import run

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
STEPS, SAVE_EVERY = 6, 3
ARGS = [
    "--hidden_dropout",
    "0.1",
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    str(STEPS),
    "--save_strategy",
    "steps",
    "--save_steps",
    str(SAVE_EVERY),
    "--seed",
    "0",
    "--max_eval_samples",
    "4",
    "--plots",
    "false",
    "--model_card",
    "false",
    "--throughput",
    "false",
    "--logging_steps",
    "1",
]
FULL = ["--lora_vision", "full", "--lora_text", "full"]
LORA = ["--lora_vision", "lora", "--lora_text", "lora", "--lora_r", "4", "--lora_dropout", "0.1"]
FAMILIES = {
    # name: (vision tower kind, or None for a timm ViT from scratch; text tower kind; plan)
    "hf_vit": ("hf_vit", "bert", FULL),
    "clip_vision": ("clip_vision", "bert", FULL),
    "dinov2": ("dinov2", "bert", FULL),
    "siglip_vision": ("siglip_vision", "bert", FULL),
    "timm_vit": (None, "bert", FULL),
    "roberta": (None, "roberta", FULL),
    "hf_vit, LoRA adapters": ("hf_vit", "bert", LORA),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("families_data") / "data")


@pytest.fixture(scope="module")
def references(data, tmp_path_factory) -> dict:
    """family -> (argv maker, reference output_dir); each family's reference run happens once, when first asked."""
    root = tmp_path_factory.mktemp("families")
    made: dict[str, tuple] = {}

    def get(family: str):
        if family not in made:
            vision, text, plan = FAMILIES[family]
            folder = root / family.replace(", ", "_").replace(" ", "_")
            vision_dir = save_tiny_vision_tower(folder / "vision", vision, dropout=0.1) if vision else None
            text_dir = save_tiny_text_tower(folder / "text", dropout=0.1, kind=text)

            def argv(output_dir: Path, *extra: str) -> list[str]:
                return recipe_argv(
                    output_dir, text_dir, data, *ARGS, *plan, *extra, vision=str(vision_dir) if vision_dir else None
                )

            run_vqa(argv(folder / "reference"))
            made[family] = (argv, folder / "reference")
        return made[family]

    return get


def run_vqa(argv: list[str]) -> dict:
    return run("vqa", parse_recipe_args(argv, "vqa"))


def _resume_copy(reference: Path, target: Path) -> Path:
    shutil.copytree(reference / f"checkpoint-{SAVE_EVERY}", target / f"checkpoint-{SAVE_EVERY}")
    return target


def _weights_file(folder: Path) -> Path:
    return folder / ("model.safetensors" if (folder / "model.safetensors").is_file() else "adapter_model.safetensors")


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_restores_every_weight_bit_identically(family, references, tmp_path):
    argv, reference = references(family)
    resumed = _resume_copy(reference, tmp_path / "resumed")
    run_vqa(argv(resumed, "--resume_from_checkpoint", "auto"))
    for name in ("model.safetensors", _weights_file(reference / f"checkpoint-{STEPS}").relative_to(reference)):
        ours, theirs = weights(resumed / name), weights(reference / name)
        assert ours.keys() == theirs.keys()
        unequal = [key for key in ours if not torch.equal(ours[key], theirs[key])]
        assert not unequal, f"{family}: {name}: {len(unequal)} of {len(ours)} tensors differ, e.g. {unequal[:3]}"


def _break(tensors: dict[str, torch.Tensor], breakage: str, prefix: str) -> str:
    """Drop one vision-tower tensor or add a stray one; returns the key concerned."""
    if breakage == "a missing key":
        key = next(k for k in sorted(tensors) if "vision_tower" in k)
        del tensors[key]
    else:
        key = prefix + "mmft.vision_tower.model.no_such_layer.weight"
        tensors[key] = torch.zeros(2)
    return key


@pytest.mark.parametrize("family", ["hf_vit", "hf_vit, LoRA adapters"])
@pytest.mark.parametrize("breakage", ["a missing key", "an unexpected key"])
def test_resume_refuses_a_checkpoint_with_a_missing_or_unexpected_key(breakage, family, references, tmp_path):
    argv, reference = references(family)
    resumed = _resume_copy(reference, tmp_path / "resumed")
    path = _weights_file(resumed / f"checkpoint-{SAVE_EVERY}")
    tensors = load_file(path)
    key = _break(tensors, breakage, "base_model.model." if "adapter" in path.name else "")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="cannot be resumed") as caught:
        run_vqa(argv(resumed, "--resume_from_checkpoint", "auto"))
    assert key.removeprefix("base_model.model.") in str(caught.value)
    assert not (resumed / "model.safetensors").exists()  # refused before training


def test_plain_trainer_resume_leaves_renamed_vit_weights_unloaded(tmp_path):
    """Why mmft loads resumed weights itself: the HF Trainer alone skips every renamed key (a negative control)."""
    trained = tiny_model(vision="hf_vit", seed=1)
    trained.save_pretrained(tmp_path / "checkpoint")
    fresh = tiny_model(vision="hf_vit", seed=2)
    trainer = Trainer(model=fresh, args=TrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to="none"))
    trainer._load_from_checkpoint(str(tmp_path / "checkpoint"))
    kept = [n for n, p in fresh.named_parameters() if not torch.equal(p, trained.state_dict()[n])]
    assert kept and all("vision_tower.model.layers" in name for name in kept), kept
