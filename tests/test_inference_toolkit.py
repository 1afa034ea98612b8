"""The shared inference and evaluation toolkit (`mmft.inference`): one sharded map-and-gather, one embedding path,
one logits -> scores rule / top-k / re-rank order, and one bad-row exclusion that every task scores with."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, Sequence, Value
from datasets import Image as ImageFeature
from helpers_captioning import tiny_caption_model, tiny_caption_processor
from PIL import Image

from mmft.data.rejects import BadExamplePolicy
from mmft.inference.bad_rows import scored_rows
from mmft.inference.embeddings import embed_images, embed_texts
from mmft.inference.scores import label_scores, match_probability, rerank, top_scores
from mmft.inference.sharded import map_and_gather, shard_bounds
from mmft.tasks.base import TaskData
from mmft.tasks.captioning.evaluation import caption_scores
from mmft.tasks.captioning.task import CaptioningArguments, CaptioningTask


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), color, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_contiguous_shards_cover_every_row_once_in_order():
    for count in (0, 1, 5, 8, 13):
        for processes in (1, 2, 3, 4):
            bounds = [shard_bounds(count, processes, index) for index in range(processes)]
            assert [row for start, stop in bounds for row in range(start, stop)] == list(range(count))
    assert map_and_gather(5, lambda start, stop: [row * 10 for row in range(start, stop)]) == [0, 10, 20, 30, 40]
    assert torch.equal(map_and_gather(3, lambda start, stop: torch.arange(start, stop)), torch.arange(3))


def test_logits_to_scores_top_k_and_rerank_order():
    logits = torch.tensor([[2.0, 0.0, 2.0]])
    assert torch.allclose(label_scores(logits, False), logits.softmax(-1))
    assert torch.allclose(label_scores(logits, True), logits.sigmoid())
    values, ids = top_scores(torch.tensor([0.2, 0.5, 0.5, 0.1]), 3)
    assert ids.tolist() == [1, 2, 0] and values.tolist() == pytest.approx([0.5, 0.5, 0.2])  # ties: lower index first
    assert top_scores(torch.tensor([0.3, 0.7]), 5)[1].tolist() == [1, 0]  # k capped at the number of labels
    assert torch.allclose(match_probability(torch.tensor([[0.0, 1.0]])), torch.tensor([1.0]).sigmoid())
    # Re-ranking reorders the first stage's candidates by score; a tie keeps the first stage's order.
    assert rerank(torch.tensor([7, 3, 9, 4]), torch.tensor([1.0, 5.0, 1.0, 2.0])).tolist() == [3, 4, 7, 9]
    assert rerank(torch.tensor([7, 3, 9]), torch.tensor([1.0, 5.0, 2.0]), top=2).tolist() == [3, 9]


def test_the_embedding_path_gives_the_models_normalised_feature_embeddings():
    from conftest import IMAGE_SIZE
    from test_retrieval import tiny_retrieval

    pixels = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    captioner = tiny_caption_model().eval()
    expected = F.normalize(captioner.core.get_image_features(pixels).pooler_output, dim=-1)
    assert torch.allclose(embed_images(captioner, [pixels[:2], pixels[2:]], "cpu").embeds, expected, atol=1e-6)

    retrieval = tiny_retrieval().eval()
    pixels = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    expected = F.normalize(retrieval.get_image_features(pixels).pooler_output, dim=-1)
    embedded = embed_images(retrieval, [pixels], "cpu", keep_states=True)
    assert torch.allclose(embedded.embeds, expected, atol=1e-6) and embedded.bank is not None
    ids = torch.tensor([[101, 7, 8, 102], [101, 9, 102, 0]])
    mask = (ids != 0).long()
    texts = ["long text", "short"]
    tokens = {"long text": (ids[0], mask[0]), "short": (ids[1], mask[1])}

    def tokenize(batch):
        return {
            "input_ids": torch.stack([tokens[t][0] for t in batch]),
            "attention_mask": torch.stack([tokens[t][1] for t in batch]),
        }

    expected = F.normalize(retrieval.get_text_features(ids, mask).pooler_output, dim=-1)
    assert torch.allclose(embed_texts(retrieval, texts, tokenize, 1, "cpu").embeds, expected, atol=1e-6)


def test_scored_rows_leave_out_the_excluded_and_report_how_many():
    scored = scored_rows(4, lambda: {1, 3})
    assert scored.keep == [0, 2] and scored.select("abcd") == ["a", "c"]
    assert scored.report({"accuracy": 1.0}, "test_") == {"accuracy": 1.0, "test_excluded_bad_rows": 2.0}
    assert scored_rows(2).report({"accuracy": 1.0}) == {"accuracy": 1.0}  # nothing left out: no count


def test_captioning_leaves_rows_rejected_as_unreadable_out_of_its_scores(tmp_path):
    """Issue 27: captioning used to score the caption of a row's blank stand-in image; like VQA, classification and
    retrieval it now leaves the row out and reports `test_excluded_bad_rows`."""
    truncated = _png((0, 0, 255))[:60]  # a PNG header and nothing else: fails only when fully decoded
    images = [{"bytes": _png((255, 0, 0)), "path": None}, {"bytes": truncated, "path": "broken.png"}]
    images.append({"bytes": _png((0, 200, 0)), "path": None})
    references = [["a red picture", "red"], ["a blue picture", "blue"], ["a green picture", "green"]]
    features = Features(
        {"image": ImageFeature(decode=False), "captions": Sequence(Value("string")), "row": Value("int64")}
    )
    evaluation = Dataset.from_dict({"image": images, "captions": references, "row": [0, 1, 2]}, features=features)
    processor = tiny_caption_processor()
    task = CaptioningTask(CaptioningArguments(baselines=False, max_new_tokens=4))
    data = TaskData(None, evaluation, None, {"train_images": None})
    policy = BadExamplePolicy("skip", 1.0, str(tmp_path / "rejects.jsonl"), run="test")
    task.attach(data, processor, policy)
    args = SimpleNamespace(per_device_eval_batch_size=2, device=torch.device("cpu"), world_size=1, process_index=0)
    trainer = SimpleNamespace(model=tiny_caption_model(), processing_class=processor, args=args, accelerator=None)

    output = task.evaluate(trainer, data)

    assert list(policy.rejected("eval")) == [1]
    assert len(output.predictions) == 3  # every row keeps its caption, so the records stay aligned
    assert output.metrics["test_excluded_bad_rows"] == 1.0
    assert output.metrics["test_num_images"] == 2.0 and output.metrics["test_num_captions"] == 4.0
    kept = caption_scores([output.predictions[0], output.predictions[2]], [references[0], references[2]])
    assert {key: output.metrics[f"test_{key}"] for key in kept} == kept
