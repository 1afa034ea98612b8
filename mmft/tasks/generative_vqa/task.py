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

On LLaVA-style conversation data (`use_format` finds it) the data hooks go to `ConversationRows`
(`conversation_task.py`): multi-turn rows through the decoder's chat template, the loss on the assistant turns, every
assistant turn generated and scored in evaluation (docs/generative_vqa.md, "Conversations").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from datasets import Dataset, DatasetDict, Features, Image, List, Value
from transformers.trainer_utils import PredictionOutput

from ...data.sources import SourceSpec
from ...inference.bad_rows import scored_split_rows
from ...unwrap import task_model
from ..base import CardInfo, Task, TaskData
from ..captioning.decoding import DecoderArguments, DecoderTask, GenerationArguments
from ..defaults import REAL_DATA_DEFAULTS
from ..vqa.task import ANSWERS, QUESTION, VQADataArguments, vqa_datasets
from .chat_processing import DEFAULT_MAX_CONVERSATION_TOKENS
from .collator import ANSWER_KEY, AnswerCollator
from .conversation_task import ConversationRows
from .conversations import CONVERSATION, CONVERSATIONS, QUESTION_TYPES, conversations_key
from .evaluation import (
    GeneratedAnswers,
    answer_scores,
    generate_answers,
    most_frequent_answer,
    question_inputs,
    sharded_generation,
)
from .modeling import MMFTForGenerativeVQA
from .processing import DEFAULT_SEPARATOR, MMFTPromptProcessor


@dataclass
class GenerativeVQAArguments(VQADataArguments, DecoderArguments, GenerationArguments):
    """Flags of the generative VQA task: the VQA data flags, the decoder and prefix, and how evaluation generates."""

    max_question_tokens: int = field(default=32, metadata={"help": "tokens kept of each question (both towers)"})
    max_answer_tokens: int = field(default=8, metadata={"help": "decoder tokens kept of each training answer"})
    answer_separator: str = field(
        default=DEFAULT_SEPARATOR, metadata={"help": "the text the decoder reads between question and answer"}
    )
    decoder_reads_question: bool = field(
        default=True,
        metadata={
            "help": "question/answer rows: the decoder reads the question as its prompt after the image prefix; "
            "false: only the bridge's prefix carries it (shorter decoder rows, so faster). Conversations: the "
            "decoder always reads every turn"
        },
    )
    max_new_tokens: int = field(default=8, metadata={"help": "evaluation: most tokens generated per answer"})
    conversations_column: str | None = field(
        default=None,
        metadata={
            "help": "train on conversations (LLaVA-style turns) in this column; a local table whose first row has "
            "'conversations' or 'messages' is read as conversations without it (docs/generative_vqa.md)"
        },
    )
    max_conversation_tokens: int = field(
        default=DEFAULT_MAX_CONVERSATION_TOKENS,
        metadata={"help": "conversations: decoder tokens kept of each conversation (its end is cut)"},
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "conversations: the decoder's chat template (Jinja text or a file); default: the decoder "
            "tokenizer's own, else mmft's ChatML template (said in the log)"
        },
    )

    def processor_kwargs(self) -> dict[str, Any]:
        """The prompt processor's settings these flags give (`MMFTPromptProcessor`; conversations add theirs)."""
        return {
            "max_caption_tokens": self.max_answer_tokens,
            "max_question_tokens": self.max_question_tokens,
            "separator": self.answer_separator,
            "decoder_reads_question": self.decoder_reads_question,
        }


class GenerativeVQATask(DecoderTask, Task):
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

    conversations: ConversationRows | None = None  # the data hooks on conversation data (`use_format`)

    def datasets(self) -> dict[str, Callable]:
        return {**vqa_datasets(self.args), **CONVERSATION_DATASETS}

    # -- data ------------------------------------------------------------------------------------------------------
    def use_format(self, spec: SourceSpec) -> None:
        """Read conversations where the data has them (`conversations.conversations_key`), else question/answer
        rows: the columns, checks, collator and evaluation follow."""
        spec = replace(spec, dataset=spec.dataset or self.default_dataset)
        chat = conversations_key(spec, self.args.conversations_column, tuple(CONVERSATION_DATASETS))
        self.conversations = ConversationRows(self.args) if chat else None
        rows = self.conversations or type(self)
        self.columns, self.text_column, self.keep_columns = rows.columns, rows.text_column, rows.keep_columns

    def prepare_data(self, spec: SourceSpec, *args, **kwargs) -> TaskData:
        self.use_format(spec)
        return super().prepare_data(spec, *args, **kwargs)

    def read_splits(self, spec: SourceSpec) -> DatasetDict:
        self.use_format(spec)
        return super().read_splits(spec)

    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        """No vocabulary: every row's target is its most frequent answer (`encode`), every answer is scored."""
        return TaskData(train, evaluation)

    def eval_targets(self, evaluation: Dataset, labels, config, train=None) -> TaskData:
        return TaskData(None, evaluation)

    def encode(self, data: TaskData, split: str) -> Callable:
        if self.conversations:
            return self.conversations.encode(data, split)
        return lambda batch: {ANSWER_KEY: [most_frequent_answer(answers) for answers in batch["answers"]]}

    def collator(self, processor, max_length: int) -> Callable:
        return self.conversations.collator(processor) if self.conversations else AnswerCollator(processor)

    # -- model -----------------------------------------------------------------------------------------------------
    def build_processor(self, model_args) -> MMFTPromptProcessor:
        if self.conversations:
            return self.conversations.build_processor(model_args)
        return MMFTPromptProcessor.from_towers(
            model_args.vision_model,
            model_args.text_model,
            self.args.decoder_model,
            model_args.image_size,
            model_args.timm_args(),
            **self.args.processor_kwargs(),
        )

    # -- evaluation ------------------------------------------------------------------------------------------------
    def evaluate(self, trainer, data: TaskData, prefix: str = "test") -> PredictionOutput:
        """Generate an answer per question of `data.eval` (split across processes) and score it. Rows rejected as
        unreadable get an answer (about their blank image) but are not scored, as in every task."""
        if self.conversations:
            return self.conversations.evaluate(trainer, data, prefix)
        model, processor, args = task_model(trainer.model), trainer.processing_class, trainer.args
        raw = data.eval.with_format(None)
        questions = raw["question"]

        def generate(start: int, stop: int) -> GeneratedAnswers:
            return generate_answers(
                model,
                processor,
                data.eval.select(range(start, stop)),
                question_inputs(processor, questions[start:stop]),
                args.per_device_eval_batch_size,
                self.args.generate_kwargs(),
                args.device,
            )

        generated = sharded_generation(len(data.eval), generate, trainer.accelerator)
        answers = generated.answers
        scored = scored_split_rows(data.info.get("policy"), raw["row"], data.scored)
        types = {
            name: scored.select(raw[column])
            for name, column in (("question_types", "question_type"), ("answer_types", "answer_type"))
            if column in raw.column_names and any(raw[column])
        }
        metrics = answer_scores(scored.select(answers), scored.select(raw["answers"]), **types)
        metrics = scored.report({**metrics, **generated.speed()})
        return PredictionOutput(answers, None, {f"{prefix}_{key}": value for key, value in metrics.items()})

    def prediction_records(self, data: TaskData, predictions: list[str], id2label) -> list[dict]:
        """`question`, the generated `prediction`, `answers`, and VQAv2's `question_id` and `answer_type` where the
        data has them (conversations: one record per assistant turn)."""
        if self.conversations:
            return self.conversations.prediction_records(data, predictions)
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


def _scenes_conversations(spec: SourceSpec) -> DatasetDict:
    """The synthetic scenes conversations (`mmft.data.scenes_conversations`, default sizes), turns made canonical;
    `question_types` (one per question) give the per-type scores."""
    from ...data import scenes_conversations

    loaded = scenes_conversations.load_scenes_conversations()
    features = Features(
        {"image": Image(), CONVERSATIONS: CONVERSATION.feature(), QUESTION_TYPES: List(Value("string"))}
    )
    return loaded.select_columns(list(features)).map(
        lambda batch: {CONVERSATIONS: [CONVERSATION.canonical(turns) for turns in batch[CONVERSATIONS]]},
        batched=True,
        features=features,
    )


CONVERSATION_DATASETS = {"scenes_conversations": _scenes_conversations}  # named datasets of conversations

__all__ = ["CONVERSATION_DATASETS", "GenerativeVQAArguments", "GenerativeVQATask"]
