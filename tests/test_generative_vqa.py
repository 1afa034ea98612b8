"""Generative VQA (mmft/tasks/generative_vqa): the loss mask against a hand-built example, greedy and beam generation
after a save/reload against the in-memory model, and a tiny end-to-end recipe run (tiny towers, a user's own tiny
decoder folder, a VQA imagefolder) writing VQA accuracy and exact match, then `mmft predict --question`."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
import torch.nn.functional as F
from helpers_captioning import save_tiny_decoder, scenes_rows, tiny_generative_model, tiny_generative_processor
from helpers_data import make_imagefolder
from helpers_launch import REPO, tiny_tower_flags
from transformers import AutoProcessor, pipeline

import mmft  # noqa: F401  (registers the Auto classes and pipelines)
from mmft import TASKS, AutoModelForGenerativeVQA, MMFTForGenerativeVQA, MMFTPromptProcessor
from mmft.cli import main as cli
from mmft.labels import IGNORE_INDEX
from mmft.tasks import task_for_model
from mmft.tasks.generative_vqa.evaluation import answer_scores, most_frequent_answer

PRESET = REPO / "recipes" / "configs" / "easy_vqa_generative.yaml"
QUESTIONS = ["what color is the shape?", "is there a circle in the image?"]


def test_the_rows_and_the_loss_mask_match_a_hand_built_example():
    processor = tiny_generative_processor()
    tokens = processor.tokenizer
    ids = lambda text: tokens(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    separator = ids(" answer:")
    long, short = ids("what color is it?"), ids("is it red?")
    assert len(long) > len(short)
    batch = processor(images=scenes_rows(2)[0], text=["what color is it?", "is it red?"], answers=["red", "no"])
    pad = [0] * (len(long) - len(short))
    prompt_width = 1 + len(long) + len(separator)
    expected_ids = [
        [101, *long, *separator, *ids("red"), 102],
        [101, *pad, *short, *separator, *ids("no"), 102],
    ]
    assert batch["input_ids"].tolist() == expected_ids  # [start] [pad ...] question separator answer [end]
    assert batch["attention_mask"].tolist() == [
        [1] * len(expected_ids[0]),
        [1, *[0] * len(pad), *[1] * (len(expected_ids[1]) - 1 - len(pad))],
    ]
    expected_labels = [
        [IGNORE_INDEX] * prompt_width + [*ids("red"), 102],
        [IGNORE_INDEX] * prompt_width + [*ids("no"), 102],
    ]
    assert batch["labels"].tolist() == expected_labels  # the answer and its end token only
    generation = processor(images=scenes_rows(2)[0], text=["what color is it?", "is it red?"])
    assert generation["input_ids"].tolist() == [row[:prompt_width] for row in expected_ids]
    assert "labels" not in generation

    model = tiny_generative_model().eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits  # (B, T, V): position t predicts token t + 1
        loss = model(**batch).loss
        # by hand: the answer tokens and the end token, predicted from the position before each
        picked = [
            (row, t) for row in range(2) for t in range(1, batch["input_ids"].shape[1]) if expected_labels[row][t] >= 0
        ]
        by_hand = torch.stack([F.cross_entropy(logits[r, t - 1].float(), batch["input_ids"][r, t]) for r, t in picked])
        assert torch.allclose(loss, by_hand.mean(), atol=1e-5)
        # negative control: the mask off (question and separator tokens counted) gives another loss
        unmasked = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        assert not torch.allclose(model(**inputs, labels=unmasked).loss, loss, atol=1e-3)


def test_without_the_question_in_the_decoder_rows_hold_only_the_separator_and_the_answer(tmp_path):
    """`decoder_reads_question=False`: every decoder row is `[start] separator answer [end]` (the question reaches
    the decoder only through the prefix), generation reads the same prompt, and a reloaded processor keeps it."""
    processor = tiny_generative_processor(decoder_reads_question=False)
    ids = lambda text: processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    separator = ids(" answer:")
    batch = processor(images=scenes_rows(2)[0], text=QUESTIONS, answers=["red", "no"])
    assert batch["input_ids"].tolist() == [[101, *separator, *ids("red"), 102], [101, *separator, *ids("no"), 102]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * (1 + len(separator)) + [*ids(answer), 102] for answer in ("red", "no")
    ]
    assert batch["text_input_ids"].shape[1] > 3  # the text tower still reads the whole question
    generation = processor(images=scenes_rows(2)[0], text=QUESTIONS)
    assert generation["input_ids"].tolist() == [[101, *separator]] * 2
    # negative control: the default processor puts the question's tokens in the rows
    assert len(tiny_generative_processor()(images=scenes_rows(2)[0], text=QUESTIONS)["input_ids"][0]) > 1 + len(
        separator
    )
    processor.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).decoder_reads_question is False


def test_training_skips_the_output_layer_on_the_prompt_and_keeps_the_loss():
    """In training with labels, logits cover only the positions from the first that predicts an answer token; the
    loss is the one computed over every position."""
    processor = tiny_generative_processor()
    batch = processor(images=scenes_rows(2)[0], text=QUESTIONS, answers=["red", "yes"])
    model = tiny_generative_model()
    for module in model.modules():  # train mode for the logit cut, without dropout's randomness
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        full = model.eval()(**batch)
        kept = model.train()(**batch)
    labelled = (batch["labels"][:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()
    first = int(labelled[0])
    assert first > 0, "the prompt must take positions for this test to mean anything"
    assert full.logits.shape[1] == batch["input_ids"].shape[1]
    assert kept.logits.shape[1] == batch["input_ids"].shape[1] - first  # the prompt's positions are skipped
    torch.testing.assert_close(kept.loss, full.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kept.logits, full.logits[:, first:], rtol=1e-5, atol=1e-5)
    # negative control: the same kept logits read against labels one position off give another loss
    shifted = F.cross_entropy(
        kept.logits[:, :-1].flatten(0, 1), batch["labels"][:, first:-1].flatten(), ignore_index=IGNORE_INDEX
    )
    assert not torch.allclose(shifted, full.loss, atol=1e-3)


def test_the_prefix_answer_loss_reads_the_first_answer_token_off_the_prefix_and_reaches_only_the_bridge_side():
    """With `prefix_answer_loss_weight` the training loss adds that weight times the cross-entropy of the answer's
    first token read off the prefix's last vector through the decoder's output layer (checked by hand); its gradient
    reaches the bridge and the prefix but not the decoder's layers. Negative controls: weight 0 gives the decoder's
    loss alone, and the answer's second token as the target gives another value."""
    processor = tiny_generative_processor()
    batch = processor(images=scenes_rows(2)[0], text=QUESTIONS, answers=["red circle", "yes"])
    model = tiny_generative_model().train()
    for module in model.modules():  # train mode (the loss is training-only), without dropout's randomness
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    weight = 0.5
    model.config.prefix_answer_loss_weight = weight
    outputs = model(**batch)
    prefix, _ = model.image_prefix(batch["pixel_values"], batch["text_input_ids"], batch["text_attention_mask"])
    logits = model.get_output_embeddings()(prefix[:, -1])
    answer_ids = [processor.tokenizer(a, add_special_tokens=False)["input_ids"] for a in ["red circle", "yes"]]
    by_hand = F.cross_entropy(logits, torch.tensor([ids[0] for ids in answer_ids]))
    torch.testing.assert_close(outputs.prefix_answer_loss, by_hand)
    model.config.prefix_answer_loss_weight = 0.0
    plain = model(**batch)
    assert plain.prefix_answer_loss is None
    torch.testing.assert_close(outputs.loss, plain.loss + weight * by_hand)
    second = F.cross_entropy(logits[:1], torch.tensor([answer_ids[0][1]]))  # negative control: another target
    assert not torch.allclose(second, F.cross_entropy(logits[:1], torch.tensor([answer_ids[0][0]])), atol=1e-3)

    model.zero_grad()
    outputs.prefix_answer_loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("caption_prefix."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".bridge." in n or "bridge" in n)
    layers = [g for n, g in grads.items() if n.startswith("decoder.") and ".layers." in n]
    assert layers and all(g is None or g.abs().sum() == 0 for g in layers)


def test_the_hidden_answer_query_feeds_the_auxiliary_loss_and_nothing_the_decoder_reads():
    """With `prefix_answer_query` the auxiliary loss reads one more learned query (the last vector `image_prefix`
    returns), which the decoder's prefix does not contain or depend on: changing that query's embedding changes the
    auxiliary loss and leaves the decoder's loss and the generated answers exactly as they were."""
    processor = tiny_generative_processor()
    images = scenes_rows(2)[0]
    batch = processor(images=images, text=QUESTIONS, answers=["red circle", "yes"])
    model = tiny_generative_model(prefix_answer_loss_weight=0.5, prefix_answer_query=True).train()
    for module in model.modules():  # train mode (the loss is training-only), without dropout's randomness
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    assert model.caption_prefix.queries.num_embeddings == model.config.num_query_tokens + 1
    states, _ = model.image_prefix(batch["pixel_values"], batch["text_input_ids"], batch["text_attention_mask"])
    assert states.shape[1] == model.config.num_query_tokens + 1
    first = torch.tensor([processor.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in ("red", "yes")])
    outputs = model(**batch)
    by_hand = F.cross_entropy(model.get_output_embeddings()(states[:, -1]), first)
    torch.testing.assert_close(outputs.prefix_answer_loss, by_hand)
    decoder_loss = outputs.loss - 0.5 * outputs.prefix_answer_loss
    prompts = processor(images=images, text=QUESTIONS)
    with torch.no_grad():
        answers = model.eval().generate(**prompts, max_new_tokens=3)
        model.caption_prefix.queries.weight[-1].normal_()  # the hidden query only
        assert torch.equal(model.generate(**prompts, max_new_tokens=3), answers)
    changed = model.train()(**batch)
    assert not torch.allclose(changed.prefix_answer_loss, outputs.prefix_answer_loss)
    torch.testing.assert_close(changed.loss - 0.5 * changed.prefix_answer_loss, decoder_loss)
    with pytest.raises(ValueError, match="prefix_answer_query .* needs num_query_tokens > 0"):
        tiny_generative_model(num_query_tokens=0, prefix_answer_loss_weight=0.5, prefix_answer_query=True)


def test_prefix_answer_loss_weight_must_not_be_negative(capsys):
    """Refused by the config, and by the recipe while parsing its flags: one line on stderr, exit status 2 (also
    `--prefix_answer_query` without a weight)."""
    with pytest.raises(ValueError, match="prefix_answer_loss_weight must be >= 0"):
        tiny_generative_model().config.__class__(prefix_answer_loss_weight=-1.0)
    from mmft.training import main as train

    assert train("generative_vqa", ["--prefix_answer_loss_weight", "-1"], str(PRESET)) == 2
    assert capsys.readouterr().err.strip() == "mmft: --prefix_answer_loss_weight must be >= 0 (0: off), got -1.0"
    argv = ["--prefix_answer_query", "true", "--prefix_answer_loss_weight", "0"]  # the hidden query, no loss to read it
    assert train("generative_vqa", argv, str(PRESET)) == 2
    assert capsys.readouterr().err.strip().startswith("mmft: --prefix_answer_query adds a learned query")


def _generate(model, processor, images, **kwargs) -> list[str]:
    inputs = processor(images=images, text=QUESTIONS)
    with torch.no_grad():
        sequences = model.generate(**inputs, max_new_tokens=5, **kwargs)
    return processor.decode_answers(sequences, inputs["input_ids"].shape[1]), sequences


def test_generation_after_save_and_reload_equals_the_in_memory_model(tmp_path):
    model, processor = tiny_generative_model(seed=3).eval(), tiny_generative_processor()
    images = scenes_rows(2)[0]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForGenerativeVQA.from_pretrained(tmp_path).eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MMFTForGenerativeVQA and type(reloaded_processor) is MMFTPromptProcessor
    assert task_for_model(loaded.config) is TASKS["generative_vqa"]  # not captioning: its own class
    greedy, sequences = _generate(model, processor, images)
    again, reloaded = _generate(loaded, reloaded_processor, images)
    assert torch.equal(sequences, reloaded) and greedy == again
    # the KV cache changes nothing; beam search runs on the same inputs
    _, uncached = _generate(model, processor, images, use_cache=False)
    assert torch.equal(sequences, uncached)
    beams, _ = _generate(model, processor, images, num_beams=2)
    assert beams == _generate(loaded, reloaded_processor, images, num_beams=2)[0]
    # the pipeline answers as generate() does, one image and question at a time or batched
    answer = pipeline("mmft-image-text-to-text", model=tmp_path)
    assert answer(images[0], text=QUESTIONS[0], max_new_tokens=5) == [{"generated_text": greedy[0]}]
    assert answer(images[1], question=QUESTIONS[1], max_new_tokens=5) == [{"generated_text": greedy[1]}]
    rows = [{"image": image, "text": question} for image, question in zip(images, QUESTIONS)]
    batched = answer(rows, batch_size=2, max_new_tokens=5)  # the prompts laid out per batch, as generate() had them
    assert batched == [[{"generated_text": text}] for text in greedy]


def test_targets_and_scores():
    assert most_frequent_answer(["Two", "2", "three"]) == "Two"  # normalised counts; as first written
    assert most_frequent_answer(["red"]) == "red"
    scores = answer_scores(
        ["red", "a circle"], [["red"] * 4, ["circle", "square", "square", "square"]], ["color", "shape"]
    )
    # one match of 4 references: min(1, 1/3) on the 3 leave-one-out subsets that keep it, 0 on the other
    assert scores["accuracy"] == pytest.approx((1.0 + 0.25) / 2) and scores["accuracy_shape"] == pytest.approx(0.25)
    assert scores["exact_match"] == 0.5 and scores["accuracy_color"] == 1.0


@pytest.mark.e2e
def test_recipe_end_to_end_then_mmft_predict(tmp_path, tiny_text_dir):
    data = make_imagefolder(tmp_path / "data", n_train=12, n_test=6, answers_per_row=4)
    decoder = save_tiny_decoder(tmp_path / "my_decoder")
    output = tmp_path / "out"
    argv = [
        "--config",
        str(PRESET),
        "--dataset",
        str(data),
        *tiny_tower_flags(tiny_text_dir),
        "--decoder_model",
        str(decoder),
        "--num_query_tokens",
        "4",
        "--lora_decoder",
        "lora",
        "--lora_r",
        "4",
        "--max_steps",
        "3",
        "--max_eval_samples",
        "6",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--max_new_tokens",
        "4",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--prefix_answer_loss_weight",
        "0.5",
        "--output_dir",
        str(output),
    ]
    from mmft.training import main as train

    threads = torch.get_num_threads()
    logged = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(logged):
        patch.setenv("MMFT_CPU_THREADS", "1")
        assert train("generative_vqa", argv, str(PRESET)) in (0, None)
    torch.set_num_threads(threads)
    # the auxiliary loss is in the saved config and logged beside the loss at each of the 3 steps
    assert json.loads((output / "config.json").read_text())["prefix_answer_loss_weight"] == 0.5
    assert logged.getvalue().count("'loss/prefix_answer_loss'") == 3, logged.getvalue()[-2000:]
    results = json.loads((output / "test_results.json").read_text())
    for key in ("test_accuracy", "test_exact_match"):
        assert 0.0 <= results[key] <= 1.0
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {"question", "prediction", "answers"} <= set(records[0])
    assert "generated" in (output / "README.md").read_text()  # the card says answers are generated

    image = tmp_path / "x.png"
    scenes_rows(1)[0][0].save(image)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert (
            cli(
                [
                    "predict",
                    "--model",
                    str(output),
                    "--image",
                    str(image),
                    "--question",
                    "what color?",
                    "--max_new_tokens",
                    "4",
                ]
            )
            == 0
        )
    lines = printed.getvalue().splitlines()
    expected = pipeline("mmft-image-text-to-text", model=output)(str(image), text="what color?", max_new_tokens=4)
    assert lines == [expected[0]["generated_text"]]
