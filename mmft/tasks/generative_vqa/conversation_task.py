"""What the generative VQA task does differently on conversation data (`GenerativeVQATask.conversations`).

The task reads question/answer rows by default; on LLaVA-style conversations (a `conversations` or `messages`
column, found in a local table's first row, or named by `--conversations_column`) it hands its data hooks here:
the column and its checks (`conversations.py`), the chat processor (`chat_processing.py`), the collator, and the
evaluation that generates every assistant turn from its gold history (`conversation_evaluation.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from transformers.trainer_utils import PredictionOutput

from ...data.sources import DataError
from ...inference.bad_rows import scored_split_rows
from ...unwrap import task_model
from ..base import TaskData
from .chat_processing import MMFTChatProcessor
from .conversation_collator import CONVERSATION_KEY, ConversationCollator
from .conversation_evaluation import EvalTurns, eval_turns, turn_inputs, turn_scores
from .conversations import CONVERSATION, CONVERSATIONS, QUESTION_TYPES
from .evaluation import GeneratedAnswers, generate_answers, sharded_generation


def chat_template_flag(value: str | None) -> str | None:
    """`--chat_template`: a Jinja template, or the path of a file holding one."""
    if value and os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            return handle.read()
    return value or None


class ConversationRows:
    """The data hooks of generative VQA on conversations; `args` are the task's flags."""

    columns = (CONVERSATION,)
    text_column = None  # the collator picks the first user turn for the text tower
    keep_columns = (QUESTION_TYPES, "question_id")

    def __init__(self, args) -> None:
        self.args = args

    def encode(self, data: TaskData, split: str) -> Callable:
        return lambda batch: {CONVERSATION_KEY: batch[CONVERSATIONS]}

    def collator(self, processor) -> ConversationCollator:
        if not isinstance(processor, MMFTChatProcessor):
            raise DataError(
                "this model's processor reads questions, not conversations (it was trained on question/answer rows); "
                "train a new model on the conversations (build it from towers) instead of --model_name_or_path"
            )
        return ConversationCollator(processor)

    def build_processor(self, model_args) -> MMFTChatProcessor:
        processor = MMFTChatProcessor.from_towers(
            model_args.vision_model,
            model_args.text_model,
            self.args.decoder_model,
            model_args.image_size,
            model_args.timm_args(),
            # a conversation's decoder reads every turn: its later questions reach it no other way
            **{k: v for k, v in self.args.processor_kwargs().items() if k != "decoder_reads_question"},
            max_conversation_tokens=self.args.max_conversation_tokens,
        )
        processor.use_chat_template(chat_template_flag(self.args.chat_template))
        return processor

    def turns(self, data: TaskData) -> EvalTurns:
        raw = data.eval.with_format(None)
        types = raw[QUESTION_TYPES] if QUESTION_TYPES in raw.column_names else None
        return eval_turns(raw[CONVERSATIONS], types)

    def evaluate(self, trainer, data: TaskData, prefix: str = "test") -> PredictionOutput:
        """Every assistant turn of `data.eval` generated from its gold history (split across processes) and scored;
        turns of rows rejected as unreadable are generated but not scored."""
        model, processor, args = task_model(trainer.model), trainer.processing_class, trainer.args
        self.collator(processor)  # a processor that cannot read conversations is refused here too
        items = self.turns(data)

        def generate(start: int, stop: int) -> GeneratedAnswers:
            return generate_answers(
                model,
                processor,
                data.eval.select(items.rows[start:stop]),  # each turn's image
                turn_inputs(processor, items, start),
                args.per_device_eval_batch_size,
                self.args.generate_kwargs(),
                args.device,
            )

        generated = sharded_generation(len(items.rows), generate, trainer.accelerator)
        answers = generated.answers
        rows = data.eval.with_format(None)["row"]
        scored = scored_split_rows(data.info.get("policy"), [rows[r] for r in items.rows], data.scored)
        metrics = turn_scores(scored.select(answers), scored.select(items.references), scored.select(items.types))
        metrics = scored.report({**metrics, "scored_turns": float(len(scored.keep)), **generated.speed()})
        return PredictionOutput(answers, None, {f"{prefix}_{key}": value for key, value in metrics.items()})

    def prediction_records(self, data: TaskData, predictions: list[str]) -> list[dict]:
        """One record per assistant turn: its row and turn, the `question` it answers, the generated `prediction`,
        the reference `answer` and the turn's `type` where it has one."""
        items = self.turns(data)
        return [
            {
                "row": row,
                "turn": turn,
                "question": asked,
                "prediction": prediction,
                "answer": reference,
                **({"type": kind} if kind else {}),
            }
            for row, turn, asked, prediction, reference, kind in zip(
                items.rows, items.turns, items.asked, predictions, items.references, items.types
            )
        ]


__all__ = ["ConversationRows", "chat_template_flag"]
