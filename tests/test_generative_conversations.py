"""Generative VQA on conversations (LLaVA-style JSONL): the multi-turn loss mask against a hand-built example, both
turn key styles, one error per kind of bad row (and `--on_bad_example skip` with its ledger), and a tiny end-to-end
recipe run writing the turn scores, then `mmft predict --prompt` on the saved model."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from helpers_captioning import save_tiny_decoder, scenes_rows, tiny_generative_model, tiny_generative_processor
from helpers_conversations import conversation, write_conversations
from helpers_launch import REPO, tiny_tower_flags
from transformers import AutoProcessor, pipeline

import mmft  # noqa: F401  (registers the Auto classes and pipelines)
from mmft import TASKS, MMFTChatProcessor
from mmft.cli import main as cli
from mmft.data.rejects import BadExamplePolicy
from mmft.data.sources import DataError, SourceSpec
from mmft.labels import IGNORE_INDEX
from mmft.tasks.generative_vqa.chat import DEFAULT_CHAT_TEMPLATE, chat_messages
from mmft.tasks.generative_vqa.conversation_evaluation import eval_turns, turn_inputs

PRESET = REPO / "recipes" / "configs" / "easy_vqa_generative.yaml"
TWO_TURNS = [
    {"role": "user", "content": "what color is it?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "and the shape?"},
    {"role": "assistant", "content": "a circle"},
]


def chat_processor() -> MMFTChatProcessor:
    base = tiny_generative_processor()  # MiniLM's tokenizer as the decoder's: no chat template of its own
    return MMFTChatProcessor(base.image_processor, base.tokenizer, base.text_tokenizer, max_question_tokens=16)


def test_the_multi_turn_mask_matches_a_hand_built_example(caplog):
    with caplog.at_level(logging.WARNING, logger="mmft.data"):
        processor = chat_processor()
    assert "has no chat template" in caplog.text  # the default template is said, not silent
    assert processor.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    ids = lambda text: processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    opener = lambda role: ids(f"<|im_start|>{role}\n")  # noqa: E731  (ChatML; the end token closes each turn)
    end = 102  # BERT's [SEP]: the decoder's end token, so each turn ends where generate() stops
    pieces = [  # (tokens, trained?) in order
        ([101], False),  # the start token, then the model's image prefix
        (opener("user") + ids("what color is it?") + [end], False),
        (opener("assistant"), False),
        (ids("red") + [end], True),
        (opener("user") + ids("and the shape?") + [end], False),
        (opener("assistant"), False),
        (ids("a circle") + [end], True),
    ]
    expected_ids = [token for tokens, _ in pieces for token in tokens]
    expected_labels = [token if trained else IGNORE_INDEX for tokens, trained in pieces for token in tokens]
    batch = processor.conversation_features([TWO_TURNS, TWO_TURNS[:2]])
    assert batch["input_ids"][0].tolist() == expected_ids
    assert batch["labels"][0].tolist() == expected_labels  # token by token: the assistant turns and their ends only
    # the shorter conversation is left-padded inside its row (after the start token), as generation lays prompts out
    short = len(pieces[1][0]) + len(pieces[2][0]) + len(pieces[3][0])
    padding = len(expected_ids) - 1 - short
    assert batch["input_ids"][1].tolist() == [101, *[0] * padding, *expected_ids[1 : 1 + short]]
    assert batch["attention_mask"][1].tolist() == [1, *[0] * padding, *[1] * short]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * (1 + padding) + expected_labels[1 : 1 + short]

    model = tiny_generative_model().eval()
    inputs = {
        "pixel_values": processor.image_processor(scenes_rows(2)[0], return_tensors="pt")["pixel_values"],
        **processor.question_features(["what color is it?"] * 2),
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
    }
    with torch.no_grad():
        logits = model(**inputs).logits  # (B, T, V): position t predicts token t + 1
        loss = model(**inputs, labels=batch["labels"]).loss
        picked = [(r, t) for r in range(2) for t in range(1, logits.shape[1]) if batch["labels"][r, t] >= 0]
        by_hand = torch.stack([F.cross_entropy(logits[r, t - 1], batch["input_ids"][r, t]) for r, t in picked])
        assert torch.allclose(loss, by_hand.mean(), atol=1e-5)
        # negative control: the assistant mask off (every real token trained on) gives another loss
        unmasked = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        assert not torch.allclose(model(**inputs, labels=unmasked).loss, loss, atol=1e-3)


def test_generation_prompt_is_the_history_and_the_assistant_opening():
    processor = chat_processor()
    ids = lambda text: processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    context = processor.context_features([TWO_TURNS[:3]])["input_ids"][0].tolist()
    history = processor.conversation_features([TWO_TURNS[:2]])["input_ids"][0].tolist()
    assert context == history + ids("<|im_start|>user\nand the shape?") + [102] + ids("<|im_start|>assistant\n")
    question = processor.generation_features(["<image>\nwhat color is it?"])["input_ids"][0].tolist()
    assert question == history[: len(question)]  # one question: a one-turn conversation, <image> removed


def test_a_later_shard_generates_from_its_own_turns():
    """The sharded evaluation hands each process items [offset, ...) of the eval turns: its inputs must be those
    turns' (first question and history), not the first shard's."""
    conversations = [
        [{**turn, "content": f"{turn['content']} {row}"} for turn in TWO_TURNS] for row in ("one", "two", "three")
    ]
    processor, items = chat_processor(), eval_turns(conversations)
    later, whole = turn_inputs(processor, items, 3)(0, 3), turn_inputs(processor, items)(3, 6)
    assert later.keys() == whole.keys() and all(torch.equal(later[key], whole[key]) for key in later)
    first = turn_inputs(processor, items)(0, 3)  # negative control: the offset is what picks the turns
    assert not torch.equal(first["input_ids"], later["input_ids"])


def _task():
    return TASKS["generative_vqa"]()


@pytest.mark.parametrize("key_style", ["from", "role"])
def test_both_key_styles_read_as_the_same_conversations(key_style, tmp_path):
    root = write_conversations(tmp_path / key_style, n_train=2, n_test=2, key_style=key_style)
    task = _task()
    data = task.prepare_data(SourceSpec(dataset=str(root)))
    assert task.conversations is not None  # found in the table's first row, no flag needed
    turns = data.train.with_format(None)[0]["conversations"]
    assert [t["role"] for t in turns] == (["human", "gpt"] * 2 if key_style == "from" else ["user", "assistant"] * 2)
    assert chat_messages(turns) == [
        {"role": "user", "content": "what color is the square?"},  # <image> removed
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "is it red?"},
        {"role": "assistant", "content": "yes"},
    ]
    assert [t["type"] for t in turns] == ["color", "color", "yes/no", "yes/no"]


def _turns(*pairs):
    return [{"from": role, "value": text} for role, text in pairs]


BAD_ROWS = {  # kind: (the bad record's fields, what the message names)
    "unknown role": ({"conversations": _turns(("human", "q?"), ("bot", "a"))}, "conversations[1]: unknown role 'bot'"),
    "no assistant turn": ({"conversations": _turns(("human", "q?"))}, "conversations has no assistant"),
    "not alternating": (
        {"conversations": _turns(("human", "q?"), ("human", "q2?"), ("gpt", "a"))},
        "conversations[1]: a 'user' turn where a 'assistant' turn belongs",
    ),
    "ends with a user turn": (
        {"conversations": _turns(("human", "q?"), ("gpt", "a"), ("human", "q2?"))},
        "conversations[2]: the conversation ends with a user turn",
    ),
    "empty value": ({"conversations": _turns(("human", "q?"), ("gpt", "  "))}, "conversations[1] (gpt): empty value"),
    "two <image> placeholders": (
        {"conversations": _turns(("human", "<image> <image> q?"), ("gpt", "a"))},
        "conversations[0]: 2 '<image>' placeholders",
    ),
    "<image> in a later turn": (
        {"conversations": _turns(("human", "q?"), ("gpt", "a"), ("human", "<image> q2?"), ("gpt", "b"))},
        "conversations[2]: 1 '<image>' placeholders",
    ),
    "missing image": ({"image": "images/nowhere.png", "conversations": conversation("red")}, "image file not found"),
}


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_each_bad_row_is_named_by_file_row_and_field(kind, tmp_path):
    record, says = BAD_ROWS[kind]
    root = write_conversations(tmp_path / "data", n_train=4, n_test=1, bad={1: record})
    with pytest.raises(DataError) as raised:
        _task().prepare_data(SourceSpec(dataset=str(root)))
    message = str(raised.value)
    image = "nowhere.png" if kind == "missing image" else "train1.png"
    assert f"{root}, split 'train', row 1, file " in message and image in message, message
    assert says in message and "--on_bad_example skip" in message, message


def test_skip_drops_the_bad_row_and_records_it_in_the_ledger(tmp_path):
    root = write_conversations(tmp_path / "data", n_train=4, n_test=1, bad=dict([(2, BAD_ROWS["unknown role"][0])]))
    ledger = tmp_path / "rejects.jsonl"
    policy = BadExamplePolicy(mode="skip", max_bad_fraction=0.5, rejects_file=str(ledger), source=str(root))
    data = _task().prepare_data(SourceSpec(dataset=str(root)), policy)
    assert data.train.with_format(None)["row"] == [0, 1, 3]
    (entry,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert entry["split"] == "train" and entry["row"] == 2 and "unknown role 'bot'" in entry["reason"]


@pytest.mark.e2e
def test_recipe_on_llava_jsonl_then_mmft_predict(tmp_path, tiny_text_dir):
    data = write_conversations(tmp_path / "data", n_train=8, n_test=3)
    decoder = save_tiny_decoder(tmp_path / "my_decoder")
    output = tmp_path / "out"
    flags = {
        "--num_query_tokens": "4",
        "--lora_decoder": "full",
        "--max_steps": "2",
        "--per_device_train_batch_size": "4",
        "--per_device_eval_batch_size": "4",
        "--max_new_tokens": "3",
        "--logging_steps": "1",
        "--disable_tqdm": "true",
        "--output_dir": str(output),
    }
    argv = ["--config", str(PRESET), "--dataset", str(data), *tiny_tower_flags(tiny_text_dir)]
    argv += ["--decoder_model", str(decoder), *(token for pair in flags.items() for token in pair)]
    from mmft.training import main as train

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        patch.setenv("MMFT_CPU_THREADS", "1")
        assert train("generative_vqa", argv, str(PRESET)) in (0, None)
    torch.set_num_threads(threads)
    results = json.loads((output / "test_results.json").read_text())
    for key in ("exact_match", "accuracy", "accuracy_color", "accuracy_yes_no", "bleu_4", "cider", "rouge_l"):
        assert f"test_{key}" in results, sorted(results)
    assert results["test_scored_turns"] == 6  # 3 conversations x 2 assistant turns
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert [(r["row"], r["turn"]) for r in records] == [(row, turn) for row in range(3) for turn in (1, 3)]
    assert records[3]["question"] == "is it red?" and records[3]["answer"] == "no" and records[3]["type"] == "yes/no"

    saved = AutoProcessor.from_pretrained(output)  # the chat template travels with the model
    assert type(saved) is MMFTChatProcessor and saved.tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    image = tmp_path / "x.png"
    scenes_rows(1)[0][0].save(image)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        command = ["predict", "--model", str(output), "--image", str(image), "--prompt", "what color?"]
        assert cli([*command, "--max_new_tokens", "3"]) == 0
    expected = pipeline("mmft-image-text-to-text", model=output)(str(image), text="what color?", max_new_tokens=3)
    assert printed.getvalue().splitlines() == [expected[0]["generated_text"]]


def test_the_named_scenes_conversations_plug_in(monkeypatch):
    from mmft.data import scenes_conversations

    load = scenes_conversations.load_scenes_conversations
    monkeypatch.setattr(scenes_conversations, "load_scenes_conversations", lambda: load(num_train=3, num_test=2))
    task = _task()
    data = task.prepare_data(SourceSpec(dataset="scenes_conversations"))
    assert task.conversations is not None and len(data.train) == 3 and len(data.eval) == 2
    raw = data.eval.with_format(None)
    items = task.conversations.turns(data)
    assert len(items.rows) == sum(len(types) for types in raw["question_types"])  # one assistant turn per question
    assert items.types == [kind for types in raw["question_types"] for kind in types]
    assert not any("<image>" in question for question in items.questions)
