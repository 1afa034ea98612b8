"""Image-text retrieval on tiny random towers: losses, negatives, LoRA, save/load, and the evaluation hook."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGE_SIZE, TINY_TIMM_CNN, tiny_text_config, tiny_vision_config
from helpers_data import make_caption_folder, make_coco_captions_json, make_flickr_csv, pair_captions
from torch import nn
from transformers import Trainer, TrainingArguments, pipeline

from mmft import AutoModelForImageTextRetrieval, LoraPlan, MMFTForImageTextRetrieval, MMFTProcessor
from mmft.contrastive import PairBatch, batch_uniforms, matching_examples, matching_loss, mine_negatives
from mmft.data import SourceSpec
from mmft.metrics.ranking import reranked_ranks, top_candidates
from mmft.tasks import task_for_model
from mmft.tasks.retrieval.evaluation import TokenBank
from mmft.tasks.retrieval.task import RetrievalArguments, RetrievalTask, caption_pairs

CAPTIONS = [
    "a red square on the left",
    "a blue circle at the top",
    "two green stars",
    "a black cross",
    "a pink disk below a box",
    "an orange star in the middle",
    "a purple rhombus",
    "a yellow plus",
]


def tiny_retrieval(vision: str = "timm_cnn", seed: int = 0, **overrides) -> MMFTForImageTextRetrieval:
    """A tiny random retrieval model without dropout anywhere (its training is a function of the seed alone)."""
    torch.manual_seed(seed)
    text = tiny_text_config()
    text.hidden_dropout_prob = text.attention_probs_dropout_prob = 0.0
    options = dict(num_bridge_layers=1, hidden_size=32, num_attention_heads=2, hidden_dropout=0.0, **overrides)
    return MMFTForImageTextRetrieval.from_vision_text_pretrained(
        vision=tiny_vision_config(vision), text=text, **options
    )


def pairs(tokenizer, n: int = 8, image_ids=None, seed: int = 0) -> dict[str, torch.Tensor]:
    text = tokenizer(CAPTIONS[:n], padding=True, return_tensors="pt", return_token_type_ids=False)
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        **text,
        "image_ids": torch.arange(n) if image_ids is None else torch.tensor(image_ids),
    }


# -- the model -----------------------------------------------------------------------------------------------------
def test_forward_shapes_and_the_contrastive_loss_is_clips(tokenizer):
    model = tiny_retrieval().eval()
    batch = pairs(tokenizer, 6)
    out = model(**batch, output_hidden_states=True)  # the loss's parts and the embeddings are extras
    assert out.logits.shape == out.logits_per_image.shape == (6, 6)
    assert torch.allclose(out.logits.T, out.logits_per_image)
    assert out.text_embeds.shape == out.image_embeds.shape == (6, 32)
    assert torch.equal(model(**batch).logits, out.logits) and set(model(**batch).keys()) == {"loss", "logits"}
    assert torch.allclose(out.loss, out.contrastive_loss + out.matching_loss)
    image = F.normalize(model.get_image_features(batch["pixel_values"]).pooler_output, dim=-1)
    text = F.normalize(model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output, dim=-1)
    logits = model.contrastive.logit_scale() * text @ image.T
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(out.contrastive_loss, expected, atol=1e-6)
    assert torch.isclose(model.contrastive.logit_scale(), torch.tensor(1 / 0.07), rtol=1e-4)  # CLIP's init
    assert model.match(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).shape == (6, 2)
    assert model.config.id2label == {0: "no match", 1: "match"}


def test_captions_of_one_image_are_not_each_others_negatives(tokenizer):
    model = tiny_retrieval().eval()
    out = model(**pairs(tokenizer, 4, image_ids=[7, 7, 1, 2]))
    logits = out.logits
    assert torch.isinf(logits[0, 1]) and torch.isinf(logits[1, 0]) and torch.isfinite(logits.diagonal()).all()
    # Row 0's loss is the cross-entropy over the columns that remain: its own image and the two other images.
    kept = logits[0, [0, 2, 3]]
    assert torch.isclose(F.cross_entropy(logits[:1], torch.tensor([0]), reduction="sum"), -kept.log_softmax(0)[0])
    control = model(**pairs(tokenizer, 4)).logits  # every row its own image: nothing masked
    assert torch.isfinite(control).all()


def test_negatives_are_drawn_by_similarity_never_from_the_own_image_and_split_like_the_batch():
    inf = torch.inf
    logits = torch.tensor([[5.0, -inf, 3.0, 4.0], [-inf, 6.0, 9.0, 1.0]])  # rows are pairs 0 and 1 of 4
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([mine_negatives(logits, 0, torch.rand(4, generator=generator))[0] for _ in range(1000)])
    assert set(draws[:, 0].tolist()) <= {2, 3} and set(draws[:, 1].tolist()) <= {0, 2, 3}  # own pair / image never
    share = (draws[:, 0] == 3).float().mean()  # softmax over the negatives {3.0, 4.0}: e / (1 + e) = 0.73
    assert abs(share - torch.tensor([3.0, 4.0]).softmax(0)[1]) < 0.04
    assert mine_negatives(torch.tensor([[1.0, -inf]]), 0, torch.rand(2))[1].tolist() == [False]  # no other image
    # One process with 2B rows and two with B rows each (offsets 0 and B) draw the same negatives.
    ids = torch.tensor([3, 1, 4, 1, 5, 9])
    full = torch.randn(6, 6).masked_fill((ids[:, None] == ids[None, :]) & ~torch.eye(6, dtype=torch.bool), -inf)
    uniforms = batch_uniforms(ids)
    whole, _ = mine_negatives(full, 0, uniforms)
    halves = torch.cat([mine_negatives(full[:3], 0, uniforms)[0], mine_negatives(full[3:], 3, uniforms)[0]])
    assert torch.equal(whole, halves) and torch.equal(uniforms, batch_uniforms(ids.clone()))
    assert not torch.equal(uniforms, batch_uniforms(ids.flip(0)))


def test_matching_batch_has_positives_then_both_negatives_and_drops_missing_ones():
    states = torch.randn(2, 3, 4)
    batch = PairBatch(
        torch.randn(2, 4),
        torch.randn(2, 4),
        torch.tensor([0, 0]),
        states,
        torch.randn(2, 5, 4),
        torch.ones(2, 5, dtype=torch.long),
    )
    masked = torch.full((2, 2), -torch.inf)  # one image only: no negative anywhere
    images, texts, mask, targets, weights = matching_examples(batch, batch, 0, masked, masked)
    assert images.shape == (6, 3, 4) and texts.shape == (6, 5, 4) and mask.shape == (6, 5)
    assert targets.tolist() == [1, 1, 0, 0, 0, 0] and weights.tolist() == [1, 1, 0, 0, 0, 0]
    logits = torch.randn(6, 2)
    expected = F.cross_entropy(logits[:2], targets[:2])  # the mean over the two real examples
    assert torch.isclose(matching_loss(logits, targets, weights, batch.image_ids, 1), expected)


def test_training_separates_pairs_in_both_heads(tokenizer, one_cpu_thread):
    torch.set_num_threads(1)  # tiny matrices: faster on one thread, and the same draws every run (the fixture restores)
    model = tiny_retrieval("hf_vit")  # 16 image tokens
    model.get_input_embeddings().requires_grad_(False)  # 1M rows of which 8 captions use a few: only optimizer time
    batch = pairs(tokenizer, 8)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, foreach=True)
    first = model(**batch).loss.item()
    for _ in range(70):  # the matching head separates all 8 at 70 steps, 7 of 8 at 60
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(**batch, return_loss=False)
        # The matching head on all 8 x 8 (image, caption) pairs: each caption's best image is its own, and back.
        grid = {
            "pixel_values": batch["pixel_values"].repeat_interleave(8, 0),
            "input_ids": batch["input_ids"].repeat(8, 1),
            "attention_mask": batch["attention_mask"].repeat(8, 1),
        }
        matching = model.match_score(model.match(**grid)).view(8, 8)  # (image, caption)
    assert loss.item() < first / 4
    assert (out.logits.argmax(1) == torch.arange(8)).all()  # each caption finds its image
    assert (matching.argmax(0) == torch.arange(8)).float().mean() >= 7 / 8  # the best image of each caption
    assert (matching.argmax(1) == torch.arange(8)).float().mean() >= 7 / 8  # the best caption of each image


def test_save_load_through_the_auto_class_and_the_matching_pipeline(tokenizer, tmp_path):
    model = tiny_retrieval().eval()
    model.save_pretrained(tmp_path)
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextRetrieval.from_pretrained(tmp_path).eval()
    assert type(loaded) is MMFTForImageTextRetrieval and task_for_model(loaded) is RetrievalTask
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    match = pipeline("mmft-image-text-retrieval", model=str(tmp_path))
    from PIL import Image

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "red")
    result = match(image=image, text=CAPTIONS[0])
    inputs = processor(images=image, text=CAPTIONS[0])
    with torch.no_grad():
        expected = loaded.match(**inputs).softmax(-1)[0]
    assert {r["label"]: round(r["score"], 5) for r in result} == {
        "no match": round(float(expected[0]), 5),
        "match": round(float(expected[1]), 5),
    }


# -- fine-tuning plans -----------------------------------------------------------------------------------------------
def test_lora_on_both_towers_trains_temperature_projections_and_matching_head(tokenizer, tmp_path):
    model = LoraPlan(vision="lora", text="lora", r=4, dropout=0.0).apply(tiny_retrieval("timm_vit"))
    # peft names each always-trained module's parameters under `<module>.original_module.` (mmft trains it in place)
    trainable = {name.replace("original_module.", "") for name, p in model.named_parameters() if p.requires_grad}
    for part in (
        "contrastive.logit_scale.log_scale",
        "contrastive.image_projection.weight",
        "contrastive.text_projection.weight",
        "matching.0.weight",
        "mmft.vision_projection.weight",
    ):
        assert any(part in name for name in trainable), part
    inner = model.get_base_model()
    before = {
        "log_scale": inner.contrastive.logit_scale.log_scale.item(),
        "image_projection": inner.contrastive.image_projection.weight.detach().clone(),
    }
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = pairs(tokenizer, 8)
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    merged = LoraPlan.merge(model)
    assert merged.contrastive.logit_scale.log_scale.item() != before["log_scale"]
    assert not torch.equal(merged.contrastive.image_projection.weight, before["image_projection"])
    merged.save_pretrained(tmp_path)
    reloaded = MMFTForImageTextRetrieval.from_pretrained(tmp_path)
    assert reloaded.contrastive.logit_scale.log_scale.item() == merged.contrastive.logit_scale.log_scale.item()


def test_negative_control_a_bare_temperature_beside_the_towers_is_refused():
    class BareTemperature(MMFTForImageTextRetrieval):
        def __init__(self, config, vision_tower=None, text_tower=None):
            super().__init__(config, vision_tower, text_tower)
            self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # CLIP's layout: a parameter on the model itself

    model = tiny_retrieval("timm_vit")
    bare = BareTemperature(model.config, model.core.vision_tower, model.core.text_tower)
    with pytest.raises(TypeError, match="logit_scale"):
        LoraPlan(vision="lora", text="lora", r=4).apply(bare)


# -- ranking helpers -----------------------------------------------------------------------------------------------
def test_reranked_ranks_by_hand_with_ties_and_several_captions():
    candidates = [[4, 1, 0], [2, 3, 1], [0, 1, 2]]
    scores = [[0.9, 0.2, 0.5], [0.3, 0.3, 0.1], [0.1, 0.2, 0.3]]
    targets = [[0], [3, 1], [5]]  # query 1 has two correct items; query 2's target is outside its candidates
    ranks = reranked_ranks([2, 1, 7], candidates, scores, targets, num_gallery=6)
    # q0: correct 0 scores 0.5, only 4 (0.9) beats it -> 1. q1: best correct is 3 at 0.3, tied with 2 -> 1 (ties
    # count against). q2: no correct candidate -> keeps its first-stage rank 7.
    assert ranks.tolist() == [1, 1, 7]


def test_top_candidates_in_chunks_equal_the_full_matrix():
    queries, gallery = torch.randn(37, 8), torch.randn(23, 8)
    scores, indices = top_candidates(queries, gallery, 5, chunk_size=4)
    full = (queries @ gallery.T).topk(5, dim=1)
    assert torch.equal(indices, full.indices) and torch.allclose(scores, full.values)


def test_token_bank_returns_rows_padded_to_their_longest_in_any_order():
    bank = TokenBank()
    bank.add([2, 0], torch.arange(2 * 4 * 1.0).view(2, 4, 1), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]))
    bank.add([1], torch.full((1, 2, 1), 9.0), torch.tensor([[1, 1]]))
    states, mask = bank.take([0, 1, 0])
    assert mask.tolist() == [[1, 0], [1, 1], [1, 0]]
    assert states[:, :, 0].tolist() == [[4.0, 5.0], [9.0, 9.0], [4.0, 5.0]]
    selected = bank.select([1, 2])  # renumbered: 0 is old 1, 1 is old 2
    assert selected.take([1])[1].tolist() == [[1, 1, 1]]


# -- the task: data and evaluation ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory):
    return make_caption_folder(tmp_path_factory.mktemp("captions"), n_train=6, n_test=7)


def test_training_rows_are_one_per_caption_with_the_image_id(caption_folder):
    task = RetrievalTask(RetrievalArguments())
    data = task.prepare_data(SourceSpec(dataset=str(caption_folder)))
    assert len(data.train) == 11  # six images: five with two captions, one with a single `caption`
    assert data.train["image_id"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 5]
    assert data.train["caption"][8] == "a red square at the bottom left"  # image 4 has one `caption`
    assert len(caption_pairs(data.eval)) == 13


def test_bad_caption_rows_of_an_imagefolder_are_named_or_skipped(tmp_path):
    from mmft.data import BadExamplePolicy, DataError

    folder = make_caption_folder(tmp_path / "data", n_train=6, n_test=2)
    metadata = folder / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    rows[2] = {"file_name": rows[2]["file_name"], "captions": ["a square", "  "]}  # an empty caption
    metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = RetrievalTask(RetrievalArguments())
    with pytest.raises(DataError, match=r"split 'train', row 2, file .*2.png: 'captions' item 1 is an empty"):
        task.prepare_data(SourceSpec(dataset=str(folder)))
    policy = BadExamplePolicy("skip", max_bad_fraction=0.5)
    data = task.prepare_data(SourceSpec(dataset=str(folder)), policy)
    assert 2 not in data.train["image_id"] and len(data.train) == 9 and list(policy.rejected("train")) == [2]


def _brute_force_metrics(model, processor, data, rerank_k: int) -> dict[str, float]:
    """Both stages from full matrices and `model.match` on every (image, caption) pair, independently of `evaluate`."""
    from mmft.metrics.ranking import retrieval_recall

    raw = data.eval.with_format(None)
    images = [data.eval[i]["pixel_values"] for i in range(len(raw))]
    texts = [c for group in raw["captions"] for c in group]
    owner = [i for i, group in enumerate(raw["captions"]) for _ in group]
    with torch.no_grad():
        image_embeds = F.normalize(model.get_image_features(torch.stack(images)).pooler_output, dim=-1)
        tokens = processor(text=texts, max_length=64)
        text_features = model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
        text_embeds = F.normalize(text_features.pooler_output, dim=-1)
    similarity = text_embeds @ image_embeds.T  # (Nt, Ni)

    def rank(scores, correct):  # pessimistic: incorrect items scoring >= the best correct one
        best = max(s for s, c in zip(scores, correct) if c)
        return sum(1 for s, c in zip(scores, correct) if not c and s >= best)

    # `model.match` on every (image, caption) pair at once, through the towers (no token cache as in `evaluate`)
    grid = processor(text=[t for _ in images for t in texts], max_length=64)
    with torch.no_grad():
        scores = model.match_score(
            model.match(torch.stack(images).repeat_interleave(len(texts), 0), grid["input_ids"], grid["attention_mask"])
        ).view(len(images), -1)

    scale = model.contrastive.logit_scale().item()
    fused = model.config.rerank_score == "match+similarity"  # else the matching head alone

    def match(image, text):  # the re-ranking score: log-odds of a match (+ the scaled similarity)
        return float(scores[image, text]) + (scale * float(similarity[text, image]) if fused else 0.0)

    out = {}
    for stage in ("dual", "rerank"):
        t2i, i2t = [], []
        for t in range(len(texts)):
            row, correct = similarity[t].tolist(), [i == owner[t] for i in range(len(images))]
            top = similarity[t].topk(rerank_k).indices.tolist()
            if stage == "rerank" and owner[t] in top:
                row, correct = [match(i, t) for i in top], [i == owner[t] for i in top]
            t2i.append(rank(row, correct))
        for i in range(len(images)):
            row, correct = similarity[:, i].tolist(), [owner[t] == i for t in range(len(texts))]
            top = similarity[:, i].topk(rerank_k).indices.tolist()
            if stage == "rerank" and any(owner[t] == i for t in top):
                row, correct = [match(i, t) for t in top], [owner[t] == i for t in top]
            i2t.append(rank(row, correct))
        out.update({f"test_{stage}_{k}": v for k, v in retrieval_recall(t2i, i2t).items()})
        out[f"{stage}_ranks"] = t2i + i2t  # per query, in the order of `evaluate`'s records
    return out


@pytest.mark.parametrize("rerank_score", ["match+similarity", "match"])
def test_evaluate_ranks_like_brute_force_and_names_both_stages(caption_folder, tmp_path, rerank_score):
    task = RetrievalTask(RetrievalArguments(rerank_k=4, similarity_chunk_size=3))
    data = task.prepare_data(SourceSpec(dataset=str(caption_folder)))
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN)
    task.attach(data, processor)
    model = tiny_retrieval().eval()
    model.config.rerank_score = rerank_score
    with torch.no_grad():  # a sharp temperature, so the similarity term moves the tiny model's re-ranked order
        model.contrastive.logit_scale.log_scale.fill_(math.log(100.0))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=5,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
    )  # as mmft.training sets it: the transform needs raw columns
    trainer = Trainer(model=model, args=args, data_collator=task.collator(processor, 64), processing_class=processor)
    result = task.evaluate(trainer, data)
    expected = _brute_force_metrics(model, processor, data, rerank_k=4)
    for stage in ("dual", "rerank"):  # every query's rank, not only the recalls (which a tiny model barely moves)
        assert [record[f"{stage}_rank"] for record in result.predictions] == expected.pop(f"{stage}_ranks"), stage
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value), key
    for stage in ("dual", "rerank"):
        for direction in ("t2i", "i2t"):
            assert {f"test_{stage}_{direction}_recall@{k}" for k in (1, 5, 10)} <= set(result.metrics)
        assert f"test_{stage}_rsum" in result.metrics
    assert result.metrics["test_num_images"] == 7 and result.metrics["test_num_captions"] == 13
    assert result.metrics["test_unique_captions"] == 1.0
    assert len(result.predictions) == 13 + 7 and result.predictions[0]["direction"] == "t2i"
    assert np.isfinite(result.metrics["test_rerank_seconds"])
    # The Trainer's own evaluation (--eval_strategy epoch) reads the eval images with their first caption: a loss.
    trainer.eval_dataset = data.eval
    trainer.preprocess_logits_for_metrics = task.preprocess_logits_for_metrics
    assert np.isfinite(trainer.evaluate()["eval_loss"])


# -- pair data as users have it: one row per (image, caption) ---------------------------------------------------------
@pytest.fixture(scope="module")
def flickr_csv(tmp_path_factory):
    return make_flickr_csv(tmp_path_factory.mktemp("flickr"), n_train=3, n_test=4)


def test_flickr_rows_of_one_image_become_one_row_and_never_each_others_negatives(flickr_csv):
    spec = SourceSpec(dataset=str(flickr_csv))
    data = RetrievalTask(RetrievalArguments()).prepare_data(spec)
    assert len(data.eval) == 4 and data.eval["captions"] == [pair_captions(i) for i in range(4)]  # CSV order kept
    assert data.eval["row"] == [0, 5, 10, 15]  # each image's first row as read
    assert data.train["image_id"] == [0] * 5 + [5] * 5 + [10] * 5  # an image's pairs share its id: not negatives
    # Negative control: with grouping off every row is an image of its own, its sibling captions its negatives.
    ungrouped = RetrievalTask(RetrievalArguments(group_by_image=False)).prepare_data(spec)
    assert len(ungrouped.eval) == 20 and ungrouped.train["image_id"] == list(range(15))


def _evaluate(task, data, tmp_path):
    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN)
    task.attach(data, processor)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=32,  # every image in one batch: copies of one file embed bit for bit alike
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
    )
    model = tiny_retrieval(seed=1).eval()
    trainer = Trainer(model=model, args=args, data_collator=task.collator(processor, 64), processing_class=processor)
    return task.evaluate(trainer, data).metrics


def test_grouping_negative_control_duplicated_gallery_images_lower_recall(flickr_csv, tmp_path):
    """The same 4 images and 20 captions as a Flickr-style CSV (5 rows per image) and as a COCO captions JSON score
    alike; with grouping off each image is in the gallery 5 times, and Recall@1 falls for structural reasons."""
    task = RetrievalTask(RetrievalArguments(rerank_k=4))
    grouped = _evaluate(task, task.prepare_data(SourceSpec(dataset=str(flickr_csv))), tmp_path)
    coco_files = make_coco_captions_json(tmp_path / "coco", n_train=3, n_test=4)
    coco_task = RetrievalTask(RetrievalArguments(rerank_k=4, **coco_files))
    coco = _evaluate(coco_task, coco_task.prepare_data(SourceSpec(dataset="coco_json")), tmp_path)
    off_task = RetrievalTask(RetrievalArguments(rerank_k=4, group_by_image=False))
    ungrouped = _evaluate(off_task, off_task.prepare_data(SourceSpec(dataset=str(flickr_csv))), tmp_path)

    assert (grouped["test_num_images"], grouped["test_num_captions"]) == (4, 20)
    assert (coco["test_num_images"], coco["test_num_captions"]) == (4, 20)
    assert (ungrouped["test_num_images"], ungrouped["test_num_captions"]) == (20, 20)
    for key in [k for k in grouped if k.startswith(("test_dual_", "test_rerank_"))]:
        if not key.endswith("_seconds"):
            assert coco[key] == pytest.approx(grouped[key]), key  # a table of pairs == the per-image file

    # Grouped: 4 gallery images, so every caption finds its image within 5.
    assert grouped["test_dual_t2i_recall@5"] == 1.0
    # Ungrouped: a caption's image has 4 copies that score exactly as it does, and ties count against the query, so
    # no caption ranks its own row first; an image's 5 copies rank the captions alike, so at most one copy of an
    # image hits (the one whose caption tops the list): image->text R@1 is a fifth of the grouped one.
    assert ungrouped["test_dual_t2i_recall@1"] == 0.0
    assert ungrouped["test_dual_t2i_recall@5"] == pytest.approx(grouped["test_dual_t2i_recall@1"])
    assert ungrouped["test_dual_i2t_recall@1"] == pytest.approx(grouped["test_dual_i2t_recall@1"] / 5)
    assert grouped["test_dual_t2i_recall@1"] > 0 and grouped["test_dual_i2t_recall@1"] > 0  # so R@1 really falls
    for stage in ("dual", "rerank"):
        for direction in ("t2i", "i2t"):
            key = f"test_{stage}_{direction}_recall@1"
            assert ungrouped[key] < grouped[key], key


def test_retrieval_flags_are_checked_when_parsed():
    with pytest.raises(ValueError, match=r"--rerank_score 'itm' is not known; choose one of: match\+similarity, match"):
        RetrievalArguments(rerank_score="itm")
    with pytest.raises(ValueError, match="--rerank_k must be >= 0"):
        RetrievalArguments(rerank_k=-1)
