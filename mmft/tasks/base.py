"""`Task`: what one task declares (model class, columns, targets, metrics, card, pipeline); `mmft.training` runs it.

A task never re-implements the training path. It answers the questions the shared code asks:
which model class and which columns, how a row becomes model inputs (`encode` + `collator`), how predictions are
scored (`compute_metrics`) and written (`prediction_records`), and what its model card and pipeline say.
Adding a task is one package under `mmft/tasks/` and one `register_task` line in `mmft/tasks/__init__.py`, plus its
metric module(s), a preset and a thin recipe (docs/tasks.md walks through the classification task as the example).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset, DatasetDict

from ..data.collator import ImageTextCollator, ImageTextTransform
from ..data.columns import Column
from ..data.prepare import checked_split, prepare_splits
from ..data.rejects import BadExamplePolicy
from ..data.sources import SourceSpec
from ..data.splits import read_splits
from ..data.streaming import stream_splits
from .defaults import REAL_DATA_DEFAULTS, dataset_slug


@dataclass
class TaskData:
    """Validated splits and what the task derived from them.

    `eval`: the split the task's evaluation scores: the test split, scored once at the end on the selected model
    (`test_*` metrics). `validation`: the split the Trainer evaluates during training, for model selection
    (`eval_*` metrics), or None when the run has none; `for_validation()` is the data as that evaluation sees it.
    `labels`: the label vocabulary of a classification-style head, in id order (becomes `id2label`), or None.
    `info`: anything else the task derived (e.g. whether every VQA question has one answer).
    """

    train: Dataset | None  # a `mmft.data.streaming.TrainStream` under --streaming; None for `mmft evaluate`
    eval: Dataset
    labels: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    validation: Dataset | None = None
    scored: str = "eval"  # the name of the `eval` split in messages and the rejects ledger ("validation" in the view)

    def for_validation(self) -> TaskData:
        """This data with the validation split as the one scored (`eval`): what the task's hooks (`compute_metrics`,
        `evaluate`) read when the Trainer evaluates during training."""
        if self.validation is None:
            raise ValueError("this run has no validation split")
        return replace(self, eval=self.validation, validation=None, scored="validation")


@dataclass(frozen=True)
class CardInfo:
    """What a model card and the Hub metadata say about a task."""

    pipeline_tag: str | None  # the Hub's pipeline tag, e.g. "visual-question-answering" (None: there is none)
    task_type: str  # model-index task type
    task_name: str  # model-index task name, e.g. "Visual Question Answering"
    summary: str  # "a visual question answering model", completed by the card
    metrics: tuple[str, ...]  # metric names (without the split prefix) that go into model-index
    usage: str  # a Python snippet: how to load and call the model; `{repo}` is filled in
    limitations: str | None = None  # Markdown bullets; None: the card's generic ones (for label classifiers)


class Task:
    """Base class of every task. Subclasses set the class attributes and implement the hooks marked so."""

    name: ClassVar[str]
    model_class: ClassVar[type]  # an `MMFTPreTrainedModel` subclass (its head)
    # the next three default to the head's own (`model_class.auto_class`, ...): the model side declares them
    auto_class: ClassVar[type]  # the transformers Auto class it is registered with
    arguments_class: ClassVar[type]  # the task's flags (an HfArgumentParser dataclass)
    columns: ClassVar[tuple[Column, ...]]  # besides `image`
    text_column: ClassVar[str | None]  # the column the text tower reads
    keep_columns: ClassVar[tuple[str, ...]] = ()  # optional extra columns carried along (e.g. question_type)
    default_dataset: ClassVar[str]
    pipeline_task: ClassVar[str]
    pipeline_class: ClassVar[type]
    card: ClassVar[CardInfo]
    # the `mmft` commands its models serve: `predict` always; `explain` needs a label head read through the bridge's
    # text->image attention, `search` an embedding space
    commands: ClassVar[tuple[str, ...]] = ("predict",)
    # verbs the task brings to the `mmft` command: verb -> "module:function", the function adding its subparser
    # (`function(subparsers, device, load_model)`, e.g. retrieval's `search`)
    verbs: ClassVar[dict[str, str]] = {}
    # its `mmft demo` page: "module:function", the function building the page inside the current `gradio.Blocks` from
    # a `mmft.demo.loaded.LoadedModel`; imported only by `mmft demo` (None: no page, and `mmft demo` says so)
    demo: ClassVar[str | None] = None
    streaming_problem: ClassVar[str | None] = None  # why --streaming cannot train this task (None: it can)
    # the metric its results are judged by (a key of test_results.json without the "test_" prefix); others reported
    # beside it where a comparison matters (retrieval: the dual encoder against the re-ranked scores)
    main_metric: ClassVar[str] = "accuracy"
    compared_metrics: ClassVar[tuple[str, ...]] = ()
    # flags of a run that names no preset (a user's data): see `REAL_DATA_DEFAULTS`; a task adds its own keys
    real_data_flags: ClassVar[dict[str, Any]] = REAL_DATA_DEFAULTS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A task that names a `model_class` takes its Auto class and pipeline from that head unless it sets them."""
        super().__init_subclass__(**kwargs)
        if "model_class" in cls.__dict__:
            for name in ("auto_class", "pipeline_task", "pipeline_class"):
                if name not in cls.__dict__ and hasattr(cls.model_class, name):
                    setattr(cls, name, getattr(cls.model_class, name))

    def __init__(self, args: Any = None) -> None:
        self.args = args if args is not None else self.arguments_class()

    @classmethod
    def output_dir_for(cls, dataset: str | None) -> str:
        """`outputs/<dataset>-<task>`: where a run without a preset writes unless `--output_dir` says."""
        return os.path.join("outputs", f"{dataset_slug(dataset or cls.default_dataset)}-{cls.name}")

    @classmethod
    def real_data_defaults(cls, dataset: str | None) -> dict[str, Any]:
        """The flags a run on `dataset` (None: the task's default) starts from when it names no preset."""
        return {**cls.real_data_flags, "output_dir": cls.output_dir_for(dataset)}

    # -- data ------------------------------------------------------------------------------------------------------
    def datasets(self) -> dict[str, Callable[[SourceSpec], DatasetDict]]:
        """Named datasets this task reads (offline demos, task-specific file formats)."""
        return {}

    def column_map(self) -> dict[str, str]:
        """Canonical column -> source column, for the columns the task's `--<name>_column` flags name explicitly.

        Unmapped columns are looked up under their accepted keys (`Column.keys`), e.g. `answers` or `answer`."""
        return {c.name: value for c in self.columns if (value := getattr(self.args, c.flag_name, None))}

    @property
    def text_noun(self) -> str:
        column = next((c for c in self.columns if c.name == self.text_column), None)
        return column.what if column else "text"

    def prepare_data(
        self,
        spec: SourceSpec,
        policy: BadExamplePolicy | None = None,
        labels: list[str] | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        validation: bool = False,
        seed: int = 42,
    ) -> TaskData:
        """Validated splits plus their targets; `labels` fixes the label vocabulary (a checkpoint's `id2label`).
        `validation`: whether the run evaluates during training (it needs a validation split, carved from train when
        the data has none); `seed` fixes what is carved (`mmft.data.sources.carve`)."""
        spec = replace(spec, dataset=spec.dataset or self.default_dataset)
        if spec.streaming:
            return self.prepare_stream(spec, policy, labels, max_eval_samples, validation)
        train, held_out, test = prepare_splits(
            spec,
            self.columns,
            self.column_map(),
            self.datasets(),
            self.keep_columns,
            max_train_samples,
            max_eval_samples,
            policy,
            validation,
            seed,
        )
        return self.with_validation(self.build_targets(train, test, labels), held_out)

    def with_validation(self, data: TaskData, validation: Dataset | None) -> TaskData:
        """`data` with its validation split, checked against the targets as the test split was (`check_split`)."""
        if validation is not None:
            self.check_split(data, validation, "validation")
        data.validation = validation
        return data

    def check_split(self, data: TaskData, split: Dataset, name: str) -> None:
        """Hook: refuse a held-out split the targets cannot score (e.g. a label outside the vocabulary), as
        `build_targets` does for the test split."""

    def read_splits(self, spec: SourceSpec) -> DatasetDict:
        """Every split of `spec.dataset` (default: the task's) with the task's canonical and kept columns."""
        spec = replace(spec, dataset=spec.dataset or self.default_dataset)
        return read_splits(spec, self.columns, self.column_map(), self.datasets(), self.keep_columns)

    def prepare_eval_data(
        self,
        spec: SourceSpec,
        splits: DatasetDict,
        split: str,
        config,
        policy: BadExamplePolicy | None = None,
        max_eval_samples: int | None = None,
        max_train_samples: int | None = None,
    ) -> TaskData:
        """Only `splits[split]` (`mmft evaluate`), checked as training checks its eval split, with the targets of
        the saved model `config` (`eval_targets`): no training split is needed. A task whose evaluation also reads
        the training split (`evaluation_reads_train`) gets it when `splits` has one."""
        source = spec.dataset or self.default_dataset
        policy = policy or BadExamplePolicy(source=source)
        evaluation = checked_split(splits[split], "eval", source, self.columns, policy, max_eval_samples)
        train = None
        if self.evaluation_reads_train() and spec.train_split in splits and spec.train_split != split:
            train = checked_split(splits[spec.train_split], "train", source, self.columns, policy, max_train_samples)
        return self.eval_targets(evaluation, self.labels_of(config), config, train)

    def evaluation_reads_train(self) -> bool:
        """Hook: whether `evaluate` reads the training split too (captioning's baselines); off by default."""
        return False

    def eval_targets(self, evaluation: Dataset, labels: list[str] | None, config, train: Dataset | None) -> TaskData:
        """Hook: `TaskData` of an eval-only run, its targets from the saved model's `config` (`labels`: its label
        vocabulary) where `build_targets` derives them from the training split; `train` is None (or the training
        split, where `evaluation_reads_train`)."""
        return TaskData(None, evaluation, labels)

    def prepare_stream(
        self,
        spec: SourceSpec,
        policy: BadExamplePolicy | None,
        labels: list[str] | None,
        max_eval_samples: int | None,
        validation: bool = False,
    ) -> TaskData:
        """`--streaming`: targets from the training stream's first rows, the training split a `TrainStream` whose
        rows are checked on the fly (see `mmft.data.streaming`), the validation and test splits in memory."""
        stream, head, held_out, test = stream_splits(
            spec,
            self.columns,
            self.column_map(),
            self.datasets(),
            self.keep_columns,
            max_eval_samples,
            policy,
            validation,
        )
        data = self.with_validation(self.build_targets(head, test, labels), held_out)
        data.train = stream.with_checks(self.streamed_row_problem(data), self.streamed_row_kept(data))
        return data

    def streamed_row_problem(self, data: TaskData) -> Callable[[dict], str | None] | None:
        """Hook (streaming): why a streamed training row cannot be trained on with the targets fixed from the head
        rows (e.g. a label outside the vocabulary); such a row goes to the bad-example policy. None: no check."""
        return None

    def streamed_row_kept(self, data: TaskData) -> Callable[[dict], bool] | None:
        """Hook (streaming): which streamed training rows to keep, where `build_targets` silently leaves rows out of
        a loaded split (VQA: questions with no answer in the vocabulary). None: keep every good row."""
        return None

    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        """Hook: the label vocabulary (or other targets) from the validated splits."""
        return TaskData(train, evaluation)

    def labels_of(self, config) -> list[str] | None:
        """The label vocabulary a saved model was trained with (None for heads without labels)."""
        if not config.id2label or getattr(self.model_class, "has_labels", True) is False:
            return None
        return [config.id2label[i] for i in range(len(config.id2label))]

    # -- model -----------------------------------------------------------------------------------------------------
    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        """Hook: arguments of `model_class.from_vision_text_pretrained` that come from the data (labels, ...)."""
        return {"labels": data.labels} if data.labels is not None else {}

    def build_processor(self, model_args):
        """Hook: the processor of a fresh model built from `model_args`' towers."""
        from ..processing_mmft import MMFTProcessor

        return MMFTProcessor.from_vision_text_pretrained(
            model_args.vision_model, model_args.text_model, model_args.image_size, model_args.timm_args()
        )

    def bind(self, model, processor) -> None:
        """Hook: make a fresh model agree with its processor (e.g. the caption decoder's start and end ids)."""

    def config_updates(self, data: TaskData) -> dict[str, Any]:
        """Hook: config fields set on a fresh or a loaded model from this run's data (e.g. `problem_type`)."""
        return {}

    # -- rows -> batches -------------------------------------------------------------------------------------------
    def encode(self, data: TaskData, split: str) -> Callable[[dict[str, list]], dict[str, list]] | None:
        """Hook: batch of rows -> target fields (`labels`, ...)."""
        return None

    def attach(self, data: TaskData, processor, policy: BadExamplePolicy | None = None) -> None:
        """Set the on-the-fly transform of every split (the validation split's reads its rows as the test split's);
        the policy is kept in `data.info["policy"]` for the tasks that score themselves (`mmft.inference.bad_rows`)."""
        data.info["policy"] = policy
        for split, dataset in (("train", data.train), ("eval", data.eval), ("validation", data.validation)):
            if dataset is None:
                continue
            dataset.set_transform(
                ImageTextTransform(
                    processor.image_processor,
                    self.text_column,
                    self.encode(data, "eval" if split == "validation" else split),
                    split,
                    policy,
                )
            )

    def collator(self, processor, max_length: int) -> Callable:
        return ImageTextCollator(processor.tokenizer, max_length, self.text_noun)

    # -- evaluation ------------------------------------------------------------------------------------------------
    def compute_metrics(self, data: TaskData, id2label: dict[int, str], excluded: Callable[[], set[int]]) -> Callable:
        """Hook: the Trainer's `compute_metrics`; `excluded()` gives eval positions not to score."""
        raise NotImplementedError

    @staticmethod
    def preprocess_logits_for_metrics(logits: Any, labels: Any) -> torch.Tensor:
        """Keep only the predicted ids during evaluation instead of every (N, num_labels) logit."""
        return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)

    def evaluate(self, trainer, data: TaskData, prefix: str = "test"):
        """Hook: metrics (keys `<prefix>_<name>`) and predictions of `data.eval` (a `PredictionOutput`). A task that
        overrides it (`evaluates_itself`) is also evaluated by it during training, on `data.for_validation()` with
        the prefix "eval", on every process (as at the end)."""
        return trainer.predict(data.eval, metric_key_prefix=prefix)

    @property
    def evaluates_itself(self) -> bool:
        """Whether the task scores a split with its own `evaluate` rather than the Trainer's prediction loop and
        `compute_metrics` (retrieval's ranking, captioning's generation)."""
        return type(self).evaluate is not Task.evaluate

    def selection_metric(self) -> str:
        """Hook: the metric models are selected by during training (`--load_best_model_at_end`,
        `--early_stopping_patience`), higher is better: `main_metric` unless the flags change what is scored."""
        return self.main_metric

    def prediction_records(self, data: TaskData, predictions: np.ndarray, id2label: dict[int, str]) -> list[dict]:
        """Hook: one JSON-able record per eval row for `predictions.jsonl`."""
        raise NotImplementedError

    def after_evaluation(self, output_dir, data: TaskData, prediction, id2label: dict[int, str]) -> None:
        """Hook: extra files in output_dir once the test metrics exist (e.g. a confusion matrix)."""

    # -- inference -------------------------------------------------------------------------------------------------
    @classmethod
    def command_lines(cls, model: str) -> list[str]:
        """The `mmft` command lines that use a model of this task (for its card): one per command it serves."""
        text = ' --text "..."' if getattr(cls.pipeline_class, "text_key", None) else ""
        examples = {
            "predict": f"mmft predict --model {model} --image image.png{text}",
            "explain": f'mmft explain --model {model} --image image.png --text "..." --out heatmap.png',
            "search": f'mmft search --model {model} --images FOLDER --query "..."',
        }
        return [examples[command] for command in cls.commands if command in examples]

    def prediction_inputs(self, row: dict, text_key: str | None) -> list[tuple[dict, Any]]:
        """Hook: (record fields, pipeline input) for each prediction `mmft predict --dataset` makes of one row of
        the task's dataset (or of a JSONL file): the image with its text under the pipeline's `text_key`."""
        if text_key is None:
            return [({}, row["image"])]
        text = row[self.text_column] if self.text_column in row else row[text_key]
        return [({}, {"image": row["image"], text_key: text})]


__all__ = ["CardInfo", "Task", "TaskData"]
