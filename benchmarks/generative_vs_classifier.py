"""Inference cost of a generated answer against a classifier head's, on the same easy-VQA test questions.

    python benchmarks/generative_vs_classifier.py --classifier outputs/easy_vqa --generative outputs/easy_vqa_generative

Both saved models answer the first `--questions` test questions, in batches of `--batch_size` and one at a time
(`--single` of them): the classifier (`AutoModelForVisualQuestionAnswering`, the arg-max answer) and the generative
model (`AutoModelForGenerativeVQA`, greedy `generate()` with the KV cache, `--max_new_tokens`). The same processor
calls prepare the inputs of both, and the clock covers the model calls only. It prints ms per question and the
accuracy (exact match with easy-VQA's one answer) of each, as Markdown. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

import mmft  # noqa: F401  (registers the Auto classes)
from mmft import AutoModelForGenerativeVQA
from mmft.data.easy_vqa import load_easy_vqa


def classifier_answers(folder: str, images, questions, batch_size: int) -> tuple[list[str], float]:
    model = AutoModelForVisualQuestionAnswering.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    answers, seconds = [], 0.0
    for start in range(0, len(questions), batch_size):
        inputs = processor(images=images[start : start + batch_size], text=questions[start : start + batch_size])
        with torch.inference_mode():
            began = time.perf_counter()
            logits = model(**inputs).logits
            seconds += time.perf_counter() - began
        answers += [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    return answers, seconds


def generated_answers(folder: str, images, questions, batch_size: int, max_new_tokens: int) -> tuple[list[str], float]:
    model = AutoModelForGenerativeVQA.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    answers, seconds = [], 0.0
    for start in range(0, len(questions), batch_size):
        batch = questions[start : start + batch_size]
        inputs = processor(images=images[start : start + batch_size], text=batch)
        with torch.inference_mode():
            began = time.perf_counter()
            sequences = model.generate(**inputs, max_new_tokens=max_new_tokens)
            seconds += time.perf_counter() - began
        answers += processor.decode_answers(sequences, inputs["input_ids"].shape[1])
    return answers, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--generative", required=True)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--single", type=int, default=50, help="questions also answered one at a time")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--max_new_tokens", type=int, default=8)
    args = parser.parse_args()
    test = load_easy_vqa()["test"].select(range(args.questions))
    opened = [Image.open(row["image"]) if isinstance(row["image"], str) else row["image"] for row in test]
    images = [image.convert("RGB") for image in opened]
    questions, truth = test["question"], [answers[0] for answers in test["answers"]]
    lines = ["| model | batch | ms per question | accuracy (exact match) |", "|---|---|---|---|"]
    for name, answer in (
        ("classifier head", lambda b, n: classifier_answers(args.classifier, images[:n], questions[:n], b)),
        (
            "generated answer",
            lambda b, n: generated_answers(args.generative, images[:n], questions[:n], b, args.max_new_tokens),
        ),
    ):
        for batch_size, count in ((args.batch_size, args.questions), (1, args.single)):
            predicted, seconds = answer(batch_size, count)
            correct = sum(p.strip().lower() == t.strip().lower() for p, t in zip(predicted, truth[:count]))
            lines.append(f"| {name} | {batch_size} | {1000 * seconds / count:.2f} | {correct / count:.4f} |")
    print("\n".join(lines))
    threads = torch.get_num_threads()
    print(f"\n{args.questions} easy-VQA test questions ({args.single} one at a time), {threads} threads")


if __name__ == "__main__":
    main()
