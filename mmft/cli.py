"""The `mmft` command: `mmft predict` (one question or a whole dataset to JSONL) and `mmft explain` (heatmaps).

    mmft predict --model outputs/easy_vqa --image shape.png --question "what shape is it?" --top_k 3
    mmft predict --model outputs/easy_vqa --dataset questions.jsonl --output predictions.jsonl
    mmft explain --model outputs/easy_vqa --image shape.png --question "what color is the shape?" --out heat.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

import torch


def load_model(path: str):
    """(model, processor) of a saved mmft folder or Hub repo; adapter-only folders are merged on load."""
    import mmft  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

    folder = Path(path)
    adapter_only = (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").is_file()
    if adapter_only:
        from .hub import load_adapter_model

        model = load_adapter_model(path, merge=True)
    else:
        model = AutoModelForVisualQuestionAnswering.from_pretrained(path)
    return model.eval(), AutoProcessor.from_pretrained(path)


def _rows_from_jsonl(path: Path) -> Iterator[dict]:
    """{"image" or "file_name": path (relative to the file's folder), "question": str} per line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            image = row.get("image", row.get("file_name"))
            if image is None or "question" not in row:
                raise SystemExit(f"{path}, line {number}: needs 'image' (or 'file_name') and 'question'")
            yield {**row, "image": str(path.parent / image) if not Path(image).is_absolute() else image}


def _rows_from_dataset(name: str, split: str | None) -> Iterator[dict]:
    """The eval split (or `split`) of any dataset the recipe reads: easy_vqa, a Hub id, an imagefolder."""
    from .data import SourceSpec, load_vqa_data

    train, evaluation = load_vqa_data(SourceSpec(dataset=name, eval_split=split))
    for row in evaluation:
        yield {"image": row["image"], "question": row["question"], "answers": row.get("answers")}


def _predict(args: argparse.Namespace) -> int:
    from .pipeline import VQAPipeline

    model, processor = load_model(args.model)
    pipe = VQAPipeline(model=model, processor=processor, device=args.device)
    if args.image:
        for result in pipe(image=args.image, question=args.question, top_k=args.top_k):
            print(f"{result['score']:.4f}\t{result['answer']}")
        return 0
    source = Path(args.dataset)
    rows = list(_rows_from_jsonl(source) if source.is_file() else _rows_from_dataset(args.dataset, args.split))
    rows = rows[: args.max_samples] if args.max_samples else rows
    inputs = [{"image": row["image"], "question": row["question"]} for row in rows]
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for row, results in zip(rows, pipe(inputs, batch_size=args.batch_size, top_k=args.top_k)):
            record = {k: v for k, v in row.items() if k != "image" or isinstance(v, str)}
            record.update(prediction=results[0]["answer"], answers_scored=results)
            out.write(json.dumps(record) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"mmft: {len(rows)} predictions written to {args.output}", file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from PIL import Image

    from .explain import explain, plot_explanation

    model, processor = load_model(args.model)
    model.to(args.device)
    with Image.open(args.image) as opened:
        image = opened.convert("RGB")
    try:
        result = explain(model, processor, image, args.question)
    except ValueError as error:
        print(f"mmft explain: {error}", file=sys.stderr)
        return 2
    path = plot_explanation(image, args.question, result, args.out)
    print(f"{result.score:.4f}\t{result.answer}")
    print(f"mmft: heatmap of {len(result.maps)} bridge layer(s) written to {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmft", description="Ask a trained mmft model questions about images.")
    commands = parser.add_subparsers(dest="command", required=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    predict = commands.add_parser("predict", help="answer one question, or every question of a dataset")
    predict.add_argument("--model", required=True, help="a saved mmft folder or Hub repo id")
    one = predict.add_argument_group("one question")
    one.add_argument("--image", help="image file")
    one.add_argument("--question", help="the question about the image")
    many = predict.add_argument_group("a dataset")
    many.add_argument("--dataset", help="a JSONL of {image, question}, or a dataset name as in the recipe")
    many.add_argument("--split", default=None, help="split of a named dataset (default: its eval split)")
    many.add_argument("--output", help="where to write JSONL predictions (default: stdout)")
    many.add_argument("--batch_size", type=int, default=32)
    many.add_argument("--max_samples", type=int, default=None)
    predict.add_argument("--top_k", type=int, default=5)
    predict.add_argument("--device", default=device)
    predict.set_defaults(run=_predict)

    heat = commands.add_parser("explain", help="plot text->image attention of the bridge over the image")
    heat.add_argument("--model", required=True)
    heat.add_argument("--image", required=True)
    heat.add_argument("--question", required=True)
    heat.add_argument("--out", default="heatmap.png")
    heat.add_argument("--device", default=device)
    heat.set_defaults(run=_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict" and bool(args.image) == bool(args.dataset):
        parser.error("predict needs either --image and --question, or --dataset")
    if args.command == "predict" and args.image and not args.question:
        parser.error("--image needs --question")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
