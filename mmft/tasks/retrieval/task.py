"""Image-text retrieval: a contrastive dual encoder, re-ranked by the bridge's image-text matching head.

Rows are `image` + `captions` (one or more). Training reads one row per (image, caption) pair, in the sampler's
seeded order, so every caption is trained on once per epoch and resuming or adding processes changes nothing;
pairs of one image are never each other's in-batch negatives (`image_ids`). Evaluation (`evaluate`) embeds the eval
images and captions once, ranks every caption's images and every image's captions by embedding similarity, then
re-ranks each query's top `--rerank_k` with the matching head; metrics are Recall@1/5/10 both ways and rsum for
both stages (`test_dual_*`, `test_rerank_*`; `eval_*` at each evaluation during training, on the validation
split), over `test_num_images` images and `test_num_captions` captions. Data: `scenes` (offline), `coco_json`
(Karpathy / COCO JSON), an imagefolder or table with `captions` (or `caption`), or a Hub dataset mapped with
`--caption_column`; rows sharing an image are merged first (`--group_by_image`), so the Flickr30k layout (one row per
image-caption pair) puts each image in the gallery once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from transformers.trainer_utils import PredictionOutput

from ...data.captions import CAPTIONS, CaptionDataArguments, caption_datasets
from ...data.collator import ImageTextTransform
from ...inference.bad_rows import scored_split_rows
from ...inference.embeddings import embed_images, embed_texts, pixel_batches
from ...rerank import RERANK_SCORES
from ...unwrap import task_model
from ..base import CardInfo, Task, TaskData
from .evaluation import RetrievalResult, evaluate_retrieval
from .modeling import MMFTForImageTextRetrieval

CAPTION = "caption"  # the column of a training pair's one caption


@dataclass
class RetrievalArguments(CaptionDataArguments):
    """Flags of the retrieval task: the caption data (`CaptionDataArguments`), re-ranking and the losses."""

    rerank_k: int = field(default=16, metadata={"help": "candidates per query re-ranked by the matching head (0: off)"})
    rerank_score: str = field(
        default="match+similarity",
        metadata={
            "help": "score of a re-ranked candidate: 'match+similarity' (the matching head's log-odds plus the "
            "dual encoder's scaled similarity, as BLIP) or 'match' (the matching head alone, as ALBEF)"
        },
    )
    projection_dim: int | None = field(
        default=None, metadata={"help": "width of the shared embedding space (default: --hidden_size)"}
    )
    gather_negatives: bool = field(
        default=True,
        metadata={
            "help": "contrast against the batch of every process, so N processes x B train as 1 x N*B "
            "(false: each process uses its own batch only)"
        },
    )
    similarity_chunk_size: int = field(
        default=1024, metadata={"help": "queries scored at once in evaluation (memory ~ chunk x gallery size)"}
    )

    def __post_init__(self) -> None:
        if self.rerank_score not in RERANK_SCORES:
            known = ", ".join(RERANK_SCORES)
            raise ValueError(f"--rerank_score {self.rerank_score!r} is not known; choose one of: {known}")
        if self.rerank_k < 0:
            raise ValueError(f"--rerank_k must be >= 0 (0: no re-ranking), got {self.rerank_k}")


def caption_pairs(images: Dataset) -> Dataset:
    """One row per (image, caption): `image`, `caption`, `image_id` (the image's row) and `row` (for messages)."""
    captions = images["captions"]
    owner = [index for index, group in enumerate(captions) for _ in group]
    rows = images["row"]
    pairs = images.select(owner).remove_columns("captions")  # an index mapping: images are not copied here
    pairs = pairs.add_column(CAPTION, [caption for group in captions for caption in group])
    return pairs.add_column("image_id", [rows[index] for index in owner])


class RetrievalTask(Task):
    """Image <-> caption retrieval."""

    name = "retrieval"
    model_class = MMFTForImageTextRetrieval
    arguments_class = RetrievalArguments
    columns = (CAPTIONS,)
    text_column = CAPTION
    default_dataset = "scenes"
    commands = ("predict", "search")
    verbs = {"search": "mmft.tasks.retrieval.command:add_command"}  # `mmft search`
    demo = "mmft.tasks.retrieval.demo:retrieval_page"  # `mmft demo`
    main_metric = "rerank_rsum"  # R@1+5+10 both ways, re-ranked; beside it the dual encoder's and text->image R@1
    compared_metrics = ("dual_rsum", "rerank_t2i_recall@1", "dual_t2i_recall@1")
    streaming_problem = (
        "its training rows are (image, caption) pairs expanded from each image's captions, which a "
        "stream cannot expand yet; drop --streaming to load the dataset into memory"
    )
    card = CardInfo(
        pipeline_tag=None,  # the Hub has no image-text retrieval pipeline tag
        task_type="image-text-retrieval",
        task_name="Image-Text Retrieval",
        summary="An image-text retrieval model (a contrastive dual encoder whose top candidates a matching head "
        "re-ranks)",
        metrics=tuple(
            f"{stage}_{key}" for stage in ("dual", "rerank") for key in ("t2i_recall@", "i2t_recall@", "rsum")
        ),
        usage=(
            "import torch\n"
            "from transformers import AutoProcessor, pipeline\n"
            "from mmft import AutoModelForImageTextRetrieval\n\n"
            'model = AutoModelForImageTextRetrieval.from_pretrained("{repo}").eval()\n'
            'processor = AutoProcessor.from_pretrained("{repo}")\n'
            'texts = processor(text=["a red circle above a blue square"], return_tensors="pt")\n'
            "with torch.no_grad():\n"
            "    text_embeds = model.get_text_features(**texts).pooler_output  # (1, P); images: get_image_features\n"
            'match = pipeline("mmft-image-text-retrieval", model="{repo}")\n'
            'print(match(image="image.png", text="a red circle above a blue square"))\n'
            '# a folder of images: mmft search --model {repo} --images FOLDER --query "..."'
        ),
        limitations=(
            "- Embeddings are compared by cosine similarity; the matching head re-ranks only the top candidates of "
            "each query (`--rerank_k`), so an item the dual encoder ranks below them is never re-scored.\n"
            "- A tower trained from scratch has only seen this dataset: expect it to fail on images unlike the "
            "training data.\n"
            "- Recall is measured on the test split named below; it says nothing about other data."
        ),
    )

    def datasets(self) -> dict[str, Callable]:
        return caption_datasets(self.args)

    @property
    def text_noun(self) -> str:
        return CAPTIONS.what

    def build_targets(self, train: Dataset, evaluation: Dataset, labels: list[str] | None) -> TaskData:
        """One row per image in both splits (rows sharing an image merged, `--group_by_image`), then one training
        row per (image, caption) pair."""
        return TaskData(caption_pairs(self.args.grouped(train)), self.args.grouped(evaluation))

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        return {"projection_dim": self.args.projection_dim}

    def prediction_inputs(self, row: dict, text_key: str | None) -> list[tuple[dict, Any]]:
        """A dataset row holds an image with all its captions: one match score per (image, caption) pair."""
        if CAPTIONS.name not in row:  # a JSONL row of one image and one text
            return super().prediction_inputs(row, text_key)
        return [({CAPTION: caption}, {"image": row["image"], text_key: caption}) for caption in row[CAPTIONS.name]]

    def config_updates(self, data: TaskData) -> dict[str, Any]:
        return {"gather_negatives": self.args.gather_negatives, "rerank_score": self.args.rerank_score}

    def attach(self, data: TaskData, processor, policy=None) -> None:
        """Training pairs -> pixels, caption, image id; validation and test images -> pixels, their first caption,
        image id (the Trainer's own evaluation loss reads those pairs; `evaluate` reads every caption)."""
        data.info["policy"] = policy
        first = lambda batch: {"text": [group[0] for group in batch["captions"]], "image_ids": batch["row"]}  # noqa: E731
        if data.train is not None:  # None: an eval-only run (`mmft evaluate`)
            data.train.set_transform(
                ImageTextTransform(
                    processor.image_processor, CAPTION, lambda batch: {"image_ids": batch["image_id"]}, "train", policy
                )
            )
        for split, dataset in (("eval", data.eval), ("validation", data.validation)):
            if dataset is not None:
                dataset.set_transform(ImageTextTransform(processor.image_processor, None, first, split, policy))

    # -- evaluation ------------------------------------------------------------------------------------------------
    def compute_metrics(self, data: TaskData, id2label, excluded=None) -> None:
        return None  # the Trainer's evaluation loop gives the loss only; the recalls come from `evaluate`

    @staticmethod
    def preprocess_logits_for_metrics(logits, labels) -> torch.Tensor:
        first = logits[0] if isinstance(logits, tuple) else logits
        return first.new_zeros(len(first))  # nothing to keep: the (B, N) similarities would only fill memory

    def selection_metric(self) -> str:
        return self.main_metric if self.args.rerank_k else "dual_rsum"  # --rerank_k 0: no re-ranked scores

    def evaluate(self, trainer, data: TaskData, prefix: str = "test") -> PredictionOutput:
        """Recall@K of the dual encoder and after re-ranking, on every caption and image of `data.eval`."""
        start = time.perf_counter()
        model, args = task_model(trainer.model), trainer.args
        raw = data.eval.with_format(None)
        training = model.training
        model.eval()
        with torch.inference_mode():
            images = embed_images(
                model,
                pixel_batches(data.eval, args.per_device_eval_batch_size, args.dataloader_num_workers),
                args.device,
                keep_states=True,
            )
            scored = scored_split_rows(data.info.get("policy"), raw["row"], data.scored)
            images = images.subset(scored.keep) if scored.excluded else images
            groups = scored.select(raw["captions"])
            texts = [caption for group in groups for caption in group]
            caption_to_image = [index for index, group in enumerate(groups) for _ in group]
            captions = embed_texts(
                model,
                texts,
                trainer.data_collator.tokenize,
                args.per_device_eval_batch_size,
                args.device,
                keep_states=True,
            )
            result = evaluate_retrieval(
                model,
                images,
                captions,
                caption_to_image,
                self.args.rerank_k,
                args.per_device_eval_batch_size,
                args.device,
                trainer.accelerator,
                self.args.similarity_chunk_size,
                prefix,
            )
        model.train(training)
        metrics = {
            **result.metrics,
            f"{prefix}_num_images": float(len(groups)),
            f"{prefix}_num_captions": float(len(texts)),
            f"{prefix}_unique_captions": len(set(texts)) / len(texts),
        }
        metrics = scored.report(metrics, f"{prefix}_")
        metrics[f"{prefix}_runtime"] = time.perf_counter() - start
        rows = scored.select(raw["row"])
        return PredictionOutput(records(result, texts, caption_to_image, rows), None, metrics)

    def prediction_records(self, data: TaskData, predictions: list[dict], id2label) -> list[dict]:
        return predictions  # `evaluate` made them already


def records(result: RetrievalResult, texts: list[str], caption_to_image: list[int], rows: list[int]) -> list[dict]:
    """One record per query: captions (t2i) then images (i2t), with both ranks (0-based) and the re-ranked top 5."""
    out = []
    for query, caption in enumerate(texts):
        out.append(
            {
                "direction": "t2i",
                "query": caption,
                "image_row": rows[caption_to_image[query]],
                "dual_rank": int(result.t2i.dual_ranks[query]),
                "rerank_rank": int(result.t2i.rerank_ranks[query]),
                "top_image_rows": [rows[i] for i in result.t2i.reranked(query)],
            }
        )
    for image, row in enumerate(rows):
        out.append(
            {
                "direction": "i2t",
                "image_row": row,
                "dual_rank": int(result.i2t.dual_ranks[image]),
                "rerank_rank": int(result.i2t.rerank_ranks[image]),
                "top_captions": [texts[i] for i in result.i2t.reranked(image)],
            }
        )
    return out


__all__ = ["RetrievalArguments", "RetrievalTask", "caption_pairs"]
