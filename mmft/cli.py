"""The `mmft` command: `mmft predict` (one input or a whole dataset to JSONL), `mmft evaluate` (a saved model's test
metrics on a dataset split, `mmft.evaluation`), `mmft explain` (heatmaps), `mmft search` (retrieval models: text ->
images of a folder, image -> captions of a file) and `mmft demo` (a local web page for any of them, `mmft.demo`).

    mmft predict --model outputs/easy_vqa --image shape.png --question "what shape is it?" --top_k 3
    mmft predict --model outputs/easy_vqa_entailment --image shape.png --text "there is a red circle"
    mmft predict --model outputs/easy_vqa --dataset questions.jsonl --output predictions.jsonl
    mmft predict --model outputs/scenes_captioning --image scene.png --num_beams 3      # prints a caption
    mmft predict --model outputs/coco_retrieval --dataset coco_json --captions_file dataset_coco.json --image_dir coco
    mmft evaluate --model outputs/easy_vqa --dataset easy_vqa      # eval_results.json + predictions.jsonl
    mmft explain --model outputs/easy_vqa --image shape.png --question "what color is the shape?" --out heat.png
    mmft search --model outputs/scenes_retrieval --images photos/ --query "a red circle above a blue square"
    mmft search --model outputs/scenes_retrieval --image scene.png --captions captions.txt
    mmft demo outputs/easy_vqa                       # http://127.0.0.1:7860 (pip install "mmft[demo]")

The task (and so the model class and the pipeline) is read from the saved config's `architectures`; `--task` states
it explicitly and fails when the model is of another task. `predict --dataset` and `evaluate` also take the data
flags of that task's recipe (`--image_column`, `--question_column`, `--captions_file`, `--image_dir`, ...).

What the command offers is read from the task registry (`mmft.TASKS`): `--task` lists the registered tasks,
`predict` takes the flags of every registered task's pipeline (`cli_arguments`), `explain` is there when a task serves
it, and a task's own verbs (`Task.verbs`, e.g. retrieval's `search`) are added by the task's package.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from .loading import load_model


def _rows_from_jsonl(path: Path, text_key: str | None) -> Iterator[dict]:
    """{"image" or "file_name": path (relative to the file's folder), <text_key>: str} per line (no text for
    captioning models: `text_key` None)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            image = row.get("image", row.get("file_name"))
            if image is None or (text_key is not None and text_key not in row):
                needs = f" and {text_key!r}" if text_key else ""
                raise SystemExit(f"{path}, line {number}: needs 'image' (or 'file_name'){needs}")
            yield {**row, "image": str(path.parent / image) if not Path(image).is_absolute() else image}


def _rows_from_dataset(task, name: str, split: str | None, flags: list[str]) -> Iterator[dict]:
    """The eval split (or `split`) of any dataset the task's recipe reads (its named datasets, a folder, a Hub id),
    with the recipe's data flags in `flags` (column names, a format's files); no training split is needed."""
    from dataclasses import replace

    from datasets import Image

    from .evaluation import data_flags_parser, evaluation_split

    parser = data_flags_parser(task, prog="mmft predict --model MODEL --dataset DATASET")
    data_args, task_args = parser.parse_args_into_dataclasses(args=flags, look_for_args_file=False)
    instance = task(task_args)
    spec = replace(data_args, dataset=name, eval_split=split or data_args.eval_split)
    splits = instance.read_splits(spec)
    evaluation = splits[evaluation_split(spec, splits)]
    yield from evaluation.cast_column("image", Image(decode=False))  # decoded by the pipeline, as in training


def _image_reference(image) -> str | None:
    """What a prediction record says of its image: the path, or None for an image held only as bytes."""
    if isinstance(image, str):
        return image
    return image.get("path") if isinstance(image, dict) else None


def _predict(args: argparse.Namespace) -> int:
    model, processor, task = load_model(args.model, args.task)
    if args.flags and not args.dataset:
        raise SystemExit(f"mmft predict: unrecognized arguments: {' '.join(args.flags)}")
    pipe = task.pipeline_class(model=model, processor=processor, device=args.device)
    text_key, options = pipe.text_key, pipe.cli_options(args)
    if args.image:
        if text_key and not args.text:
            raise SystemExit(f"mmft: --image needs --text (or --question) for a {task.name!r} model")
        for line in pipe.cli_lines(pipe(args.image, **({text_key: args.text} if text_key else {}), **options)):
            print(line)
        return 0
    source = Path(args.dataset)
    try:
        rows = list(
            _rows_from_jsonl(source, text_key)
            if source.is_file()
            else _rows_from_dataset(task, args.dataset, args.split, args.flags)
        )
    except ValueError as error:  # a `DataError` (the data, a missing file flag) or a flag's own check
        raise SystemExit(f"mmft predict: {error}") from None
    rows = rows[: args.max_samples] if args.max_samples else rows
    instance = task()
    pairs = [(row, fields, given) for row in rows for fields, given in instance.prediction_inputs(row, text_key)]
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        results = pipe([given for _, _, given in pairs], batch_size=args.batch_size, **options)
        for (row, fields, _), result in zip(pairs, results):
            record = {**row, "image": _image_reference(row["image"])}
            record.update(fields)
            record.update(pipe.cli_record(result))
            out.write(json.dumps(record) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"mmft: {len(pairs)} predictions of {len(rows)} rows written to {args.output}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import main as evaluate

    return evaluate(args.model, args.flags)


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="a saved model's test metrics on a dataset split: eval_results.json + predictions.jsonl",
        description="Score a saved model on one split as its training run scored its test split (the task is read "
        "from the model). Besides --model it takes the data flags of the task's recipe (--dataset, --split or "
        "--eval_split, --image_column, the task's column and file flags, --max_eval_samples, --on_bad_example), "
        "--output_dir (default MODEL/eval/DATASET-SPLIT), --submission FILE (VQAv2's official results file), "
        "--per_device_eval_batch_size, --dataloader_num_workers and --bf16.",
    )
    evaluate.add_argument("--model", required=True, help="a saved mmft folder (a run's output_dir)")
    evaluate.set_defaults(run=_evaluate)


def _explain(args: argparse.Namespace) -> int:
    from .explain import explain, plot_explanation
    from .pipeline import load_rgb

    model, processor, _ = load_model(args.model, command="explain")
    model.to(args.device)
    image = load_rgb(args.image)  # decoded as in training: EXIF rotation, transparency on white
    try:
        result = explain(model, processor, image, args.text)
    except ValueError as error:
        print(f"mmft explain: {error}", file=sys.stderr)
        return 2
    path = plot_explanation(image, args.text, result, args.out)
    print(f"{result.score:.4f}\t{result.answer}")
    print(f"mmft: heatmap of {len(result.maps)} bridge layer(s) written to {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmft", description="Run a trained mmft model on images and texts.")
    from .tasks import TASKS

    commands = parser.add_subparsers(dest="command", required=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    predict = commands.add_parser("predict", help="predict for one image and text, or every row of a dataset")
    predict.add_argument("--model", required=True, help="a saved mmft folder or Hub repo id")
    predict.add_argument("--task", choices=sorted(TASKS), help="the model's task (default: read from its config)")
    one = predict.add_argument_group("one input")
    one.add_argument("--image", help="image file")
    one.add_argument(
        "--text",
        "--question",
        "--prompt",
        dest="text",
        help="the text about the image (a VQA question, a statement, a generative model's prompt)",
    )
    many = predict.add_argument_group("a dataset")
    many.add_argument(
        "--dataset",
        help="a JSONL of {image, question|text}, or a dataset as in the recipe (with its data flags, e.g. "
        "--captions_file, --question_column)",
    )
    many.add_argument("--split", default=None, help="split of a named dataset (default: its eval split)")
    many.add_argument("--output", help="where to write JSONL predictions (default: stdout)")
    many.add_argument("--batch_size", type=int, default=32)
    many.add_argument("--max_samples", type=int, default=None)
    for name in TASKS:  # each registered task's pipeline flags, once each
        for flags, options in getattr(TASKS[name].pipeline_class, "cli_arguments", ()):
            if not any(flag in predict._option_string_actions for flag in flags):
                predict.add_argument(*flags, **options)
    predict.add_argument("--device", default=device)
    predict.set_defaults(run=_predict)
    _add_evaluate(commands)

    if any("explain" in TASKS[name].commands for name in TASKS):
        heat = commands.add_parser("explain", help="plot text->image attention of the bridge over the image")
        heat.add_argument("--model", required=True)
        heat.add_argument("--image", required=True)
        heat.add_argument("--text", "--question", dest="text", required=True, help="the question or text")
        heat.add_argument("--out", default="heatmap.png")
        heat.add_argument("--device", default=device)
        heat.set_defaults(run=_explain)
    added = set(commands.choices)
    for name in TASKS:  # a task's own verbs (`Task.verbs`: verb -> "module:function(commands, device, load_model)")
        for verb, where in getattr(TASKS[name], "verbs", {}).items():
            if verb not in added:
                module, function = where.split(":")
                getattr(importlib.import_module(module), function)(commands, device, load_model)
                added.add(verb)
    from .demo.page import add_command as add_demo  # `mmft demo` (mmft/demo/)

    add_demo(commands, device)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, flags = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if flags and args.command not in ("predict", "evaluate"):  # those two take the task's data flags
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    args.flags = flags
    if args.command == "predict" and bool(args.image) == bool(args.dataset):
        parser.error("predict needs either --image (with --text or --question, except for captioning), or --dataset")
    if getattr(args, "check", None):  # a verb's own check of its arguments (exit 2 with its usage, as argparse)
        args.check(args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
