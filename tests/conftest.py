"""Tiny random towers and small fixtures shared by the test suite (no network, no downloads)."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    CLIPVisionConfig,
    Dinov2Config,
    RobertaConfig,
    SiglipVisionConfig,
    ViTConfig,
)

import mmft
from mmft.towers import resolve_name, vision_config_from_name

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each trains on one thread (in this process, and in the
    # recipes it launches through mmft.training.use_cpu_cores), so workers never compete for a core.
    os.environ["MMFT_CPU_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """End-to-end files first, the rest after, each group in file order.

    With `--dist loadfile --no-loadscope-reorder` (`make test`), pytest-xdist hands out whole files in this order, so
    the long launches start while many short unit files are still queued to fill the other worker's idle time. Left
    to its default order (most tests first), the one- or two-test launch files came last and one worker finished
    ~1.5 min before the other.
    """
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: file and test order kept


# The only tests that may skip, each with why. Any other skip fails the run: a skipped test here has almost always
# meant a missing install step (bitsandbytes, DeepSpeed, pycocoevalcap, an offline asset), which CI must not hide.
ALLOWED_SKIPS = {
    "tests/test_retrieval_search.py::test_nearest_matches_brute_force_with_and_without_faiss": (
        "faiss is optional (`mmft search` falls back to chunked exact search without it)"
    ),
    "tests/test_precision.py::": "these check the CPU-only behaviour; they skip on a machine with an accelerator",
}
_unexpected_skips: list[tuple[str, str]] = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_runtest_logreport(report):
    """Collect skips outside `ALLOWED_SKIPS` (under xdist, the controller sees every worker's reports)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        if not any(report.nodeid.startswith(allowed) for allowed in ALLOWED_SKIPS):
            _unexpected_skips.append((report.nodeid, _skip_reason(report)))


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section("skips outside tests/conftest.py's ALLOWED_SKIPS (the run fails)", red=True)
        for nodeid, reason in _unexpected_skips:
            terminalreporter.line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and not hasattr(session.config, "workerinput") and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


IMAGE_SIZE = 32
ANSWERS = ["yes", "no", "red", "circle"]
TINY_TIMM_VIT = {"img_size": IMAGE_SIZE, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
TINY_TIMM_CNN = {"features_only": True, "out_indices": [1]}


def tiny_vision_config(kind: str):
    """A random vision tower config of each supported family, small enough for CPU unit tests."""
    if kind == "hf_vit":
        return ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=IMAGE_SIZE,
            patch_size=8,
        )
    if kind == "clip_vision":
        return CLIPVisionConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=IMAGE_SIZE,
            patch_size=8,
            projection_dim=16,
        )
    if kind == "dinov2":
        return Dinov2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            mlp_ratio=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        )
    if kind == "siglip_vision":
        return SiglipVisionConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=IMAGE_SIZE,
            patch_size=8,
        )
    if kind == "timm_vit":
        return vision_config_from_name("timm:vit_tiny_patch16_224", TINY_TIMM_VIT)
    if kind == "timm_cnn":
        return vision_config_from_name("timm:resnet10t", TINY_TIMM_CNN)
    raise KeyError(kind)


def tiny_text_config(kind: str = "bert"):
    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=30522)
    if kind == "bert":
        return BertConfig(**common)
    if kind == "roberta":
        return RobertaConfig(**common, max_position_embeddings=80, pad_token_id=0)
    raise KeyError(kind)


VISION_KINDS = ("hf_vit", "clip_vision", "timm_vit", "timm_cnn")


def tiny_model(bridge: str = "co_attention", vision="timm_vit", text="bert", seed: int = 0, **overrides):
    """A tiny VQA model; `vision` / `text` name a kind of tiny tower above, or are a tower config themselves."""
    torch.manual_seed(seed)
    options = dict(num_bridge_layers=1, hidden_size=32, num_attention_heads=2, hidden_dropout=0.0)
    options.update(overrides)
    vision = tiny_vision_config(vision) if isinstance(vision, str) else vision
    text = tiny_text_config(text) if isinstance(text, str) else text
    return mmft.MMFTForVisualQuestionAnswering.from_vision_text_pretrained(
        vision=vision, text=text, bridge=bridge, labels=ANSWERS, **options
    )


def train_steps(model: torch.nn.Module, batch: dict, steps: int, lr: float = 1e-2) -> list[float]:
    """`steps` AdamW steps of `model`'s trainable parameters on one batch, in train mode; the losses."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Train in this process on one thread, like an `accelerate launch --num_cpu_threads_per_process 1` run (the
    same arithmetic), and several times faster than two threads for tiny models on a shared 2-core machine."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMFT_CPU_THREADS", "1")  # read by mmft.training.use_cpu_cores
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_name("minilm"))


@pytest.fixture
def batch(tokenizer):
    """8 random images with 8 real questions, and int answer ids."""
    generator = torch.Generator().manual_seed(0)
    questions = ["is there a red circle?", "what color is the shape?", "what shape is it?", "is it blue?"] * 2
    text = tokenizer(questions, padding=True, return_tensors="pt", return_token_type_ids=False)
    return {
        "pixel_values": torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
        "labels": torch.tensor([0, 2, 3, 1, 0, 2, 3, 1]),
    }


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory):
    """A random 1-layer BERT saved with MiniLM's tokenizer: a real local text tower folder for recipe runs."""
    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    AutoModel.from_config(tiny_text_config()).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve_name("minilm")).save_pretrained(path)
    return path
