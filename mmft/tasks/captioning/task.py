"""Image captioning: a pretrained causal LM writes the caption, reading the bridge's fused states as a prefix.

Rows are `image` + `captions` (one or more references). Training sees every (image, caption) pair once per epoch;
the loss covers caption tokens only. The text tower reads a fixed prompt (`--caption_prompt`, saved with the
processor). Evaluation generates a caption per eval image (`--max_new_tokens`, `--num_beams`, `--do_sample`, ...),
scores BLEU-1..4, CIDEr-D and ROUGE-L against the references, and scores two baselines in the same run
(`mmft.tasks.captioning.evaluation`): the most frequent training caption, and the caption of the nearest training image
by the trained vision tower's embedding. Each evaluation during training generates and scores the validation split
the same way (`eval_cider`, ...; no baselines), bounded by `--max_eval_samples`. Rows rejected as unreadable under
`--on_bad_example skip` are left out of every score (`excluded_bad_rows` says how many), as in the other tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from transformers.trainer_utils import PredictionOutput

from ...data.caption_collator import CAPTION_KEY, CaptionCollator
from ...data.captions import CAPTIONS, CaptionDataArguments, caption_datasets
from ...inference.bad_rows import scored_split_rows
from ...inference.sharded import map_and_gather
from ...unwrap import task_model
from ..base import CardInfo, Task, TaskData
from ..defaults import REAL_DATA_DEFAULTS
from .decoding import DecoderArguments, DecoderTask, GenerationArguments
from .evaluation import Generated, baseline_scores, caption_scores, generate_captions, image_features
from .modeling import MMFTForConditionalGeneration
from .processing import DEFAULT_PROMPT, MMFTCaptionProcessor

logger = logging.getLogger("mmft")


@dataclass
class CaptioningArguments(CaptionDataArguments, DecoderArguments, GenerationArguments):
    """Flags of the captioning task: the caption data, the decoder and prefix (`DecoderArguments`), the prompt, and
    how evaluation generates (`GenerationArguments`)."""

    caption_prompt: str = field(default=DEFAULT_PROMPT, metadata={"help": "the fixed text the text tower reads"})
    max_caption_tokens: int = field(default=32, metadata={"help": "decoder tokens kept of each training caption"})
    baselines: bool = field(default=True, metadata={"help": "score the frequent-caption and nearest-image baselines"})


class CaptioningTask(DecoderTask, Task):
    """Image -> caption."""

    name = "captioning"
    model_class = MMFTForConditionalGeneration
    arguments_class = CaptioningArguments
    columns = (CAPTIONS,)
    text_column = None  # the text tower reads the processor's fixed prompt
    default_dataset = "scenes"
    demo = "mmft.tasks.captioning.demo:captioning_page"  # `mmft demo`
    streaming_problem = (
        "its training rows are (image, caption) pairs expanded from each image's captions, which a "
        "stream cannot expand yet; drop --streaming to load the dataset into memory"
    )
    main_metric = "cider"
    real_data_flags = {**REAL_DATA_DEFAULTS, "decoder_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    card = CardInfo(
        pipeline_tag="image-to-text",
        task_type="image-to-text",
        task_name="Image Captioning",
        summary="An image captioning model",
        metrics=("cider", "bleu_4", "rouge_l"),
        usage=(
            "from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline\n\n"
            'caption = pipeline("mmft-image-to-text", model="{repo}")\n'
            'print(caption("image.png", max_new_tokens=32))\n\n'
            'model = AutoModelForImageTextToText.from_pretrained("{repo}")\n'
            'processor = AutoProcessor.from_pretrained("{repo}")\n'
            "from PIL import Image\n"
            'ids = model.generate(**processor(images=Image.open("image.png")), max_new_tokens=32, num_beams=3)\n'
            "print(processor.decode_captions(ids))"
        ),
        limitations=(
            "- The decoder writes what it learned from the training captions; on images unlike the training data "
            "expect fluent but wrong captions.\n"
            "- A tower trained from scratch has only seen this dataset.\n"
            "- BLEU, CIDEr-D and ROUGE-L count n-gram overlap with the references; they do not check that a caption "
            "is true of the image."
        ),
    )

    def datasets(self) -> dict[str, Callable]:
        return caption_datasets(self.args)

    # -- data ------------------------------------------------------------------------------------------------------
    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        """One row per image in both splits (rows sharing an image merged, `--group_by_image`), then one training row
        per (image, caption) pair; eval rows keep all their references."""
        train, evaluation = self.args.grouped(train), self.args.grouped(evaluation)
        counts = [len(captions) for captions in train["captions"]]
        pairs = train.select([row for row, count in enumerate(counts) for _ in range(count)])
        pairs = pairs.add_column("caption_index", [index for count in counts for index in range(count)])
        return TaskData(pairs, evaluation, None, {"train_images": train})

    def evaluation_reads_train(self) -> bool:
        return self.args.baselines  # the baselines caption eval images with training captions

    def eval_targets(self, evaluation: Dataset, labels, config, train=None) -> TaskData:
        if self.args.baselines and train is None:
            logger.warning("mmft: the dataset has no training split: the caption baselines are not scored")
        return TaskData(None, evaluation, None, {"train_images": train})

    def encode(self, data: TaskData, split: str) -> Callable:
        if split == "train":
            return lambda batch: {
                CAPTION_KEY: [group[i] for group, i in zip(batch["captions"], batch["caption_index"])]
            }
        return lambda batch: {CAPTION_KEY: [group[0] for group in batch["captions"]]}  # eval loss: the first caption

    def collator(self, processor, max_length: int) -> Callable:
        return CaptionCollator(processor)

    # -- model -----------------------------------------------------------------------------------------------------
    def build_processor(self, model_args) -> MMFTCaptionProcessor:
        return MMFTCaptionProcessor.from_towers(
            model_args.vision_model,
            model_args.text_model,
            self.args.decoder_model,
            model_args.image_size,
            model_args.timm_args(),
            prompt=self.args.caption_prompt,
            max_caption_tokens=self.args.max_caption_tokens,
        )

    # -- evaluation ------------------------------------------------------------------------------------------------
    def evaluate(self, trainer, data: TaskData, prefix: str = "test") -> PredictionOutput:
        """Generate a caption per image of `data.eval` (split across processes) and score it; at the end (prefix
        "test") the two baselines too, which evaluations during training skip (they embed every training image).
        Rows rejected as unreadable get a caption (of their blank image) but are not scored, as in every task."""
        model, processor, args = task_model(trainer.model), trainer.processing_class, trainer.args
        accelerator = trainer.accelerator
        shards: list[Generated] = []

        def generate(start: int, stop: int) -> list[tuple[str, Any]]:
            generated = generate_captions(
                model,
                processor,
                data.eval.select(range(start, stop)),
                args.per_device_eval_batch_size,
                self.args.generate_kwargs(),
                args.device,
            )
            shards.append(generated)
            return list(zip(generated.captions, generated.features))

        generated = map_and_gather(len(data.eval), generate, accelerator)
        processes = accelerator.num_processes if accelerator is not None else 1
        timing = map_and_gather(  # one row per process: its generation time and tokens
            processes, lambda start, stop: [(shards[0].seconds, shards[0].new_tokens)] * (stop - start), accelerator
        )
        captions = [caption for caption, _ in generated]
        raw = data.eval.with_format(None)
        scored = scored_split_rows(data.info.get("policy"), raw["row"], data.scored)  # read once all have decoded
        references = scored.select(raw["captions"])
        metrics = caption_scores(scored.select(captions), references)
        seconds, tokens = max(s for s, _ in timing), sum(n for _, n in timing)
        metrics.update(generation_seconds=seconds, generated_tokens_per_second=tokens / max(seconds, 1e-9))
        metrics.update(num_images=float(len(references)), num_captions=float(sum(len(r) for r in references)))
        train_images = data.info["train_images"]
        if self.args.baselines and prefix == "test" and train_images is not None:
            import torch

            train_features = image_features(
                model, processor.image_processor, train_images, args.per_device_eval_batch_size, args.device
            )
            scores, _ = baseline_scores(
                references,
                train_images.with_format(None)["captions"],
                torch.stack(scored.select([feature for _, feature in generated])),
                train_features,
            )
            metrics.update(scores)
        metrics = scored.report(metrics)
        return PredictionOutput(captions, None, {f"{prefix}_{key}": value for key, value in metrics.items()})

    def prediction_records(self, data: TaskData, predictions: list[str], id2label) -> list[dict]:
        raw = data.eval.with_format(None)
        names = [image.get("path") if isinstance(image, dict) else None for image in raw["image"]]
        return [
            {"image": name or f"eval row {row}", "caption": caption, "references": references}
            for name, row, caption, references in zip(names, raw["row"], predictions, raw["captions"])
        ]


__all__ = ["CaptioningArguments", "CaptioningTask"]
