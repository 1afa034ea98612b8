"""Builders of small on-disk VQA datasets in each supported source format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


def write_image(path: Path, colour: str, mode: str = "RGB") -> None:
    array = np.full((24, 24, 3), 255, dtype=np.uint8)
    array[6:18, 6:18] = COLOURS[colour]
    Image.fromarray(array).convert(mode).save(path)


def rows(n: int) -> list[dict]:
    """Questions whose answers follow from the image: the colour of the square."""
    out = []
    for i in range(n):
        colour = ("red", "blue")[i % 2]
        question = ("what color is the shape?", "is the shape red?")[(i // 2) % 2]
        answer = colour if question.startswith("what") else ("yes" if colour == "red" else "no")
        out.append({"file_name": f"{i}.png", "colour": colour, "question": question, "answer": answer})
    return out


def make_imagefolder(
    root: Path, n_train: int = 24, n_test: int = 8, modes=("RGB", "L", "RGBA"), answers_per_row: int = 3
) -> Path:
    """Train and test splits of `rows`; each row's answer is given `answers_per_row` times (VQA accuracy counts
    min(1, matches / 3) over leave-one-out subsets, so a correct answer scores 1.0 only with 4 or more copies)."""
    for split, n in (("train", n_train), ("test", n_test)):
        folder = root / split
        folder.mkdir(parents=True)
        with (folder / "metadata.jsonl").open("w") as handle:
            for i, row in enumerate(rows(n)):
                write_image(folder / row["file_name"], row["colour"], modes[i % len(modes)])
                handle.write(
                    json.dumps(
                        {
                            "file_name": row["file_name"],
                            "question": row["question"],
                            "answers": [row["answer"]] * answers_per_row,
                        }
                    )
                    + "\n"
                )
    return root


def make_parquet_hub_layout(root: Path, n_train: int = 24, n_test: int = 8, relative_paths: bool = False) -> Path:
    """A `load_dataset(<dir>)` dataset with non-standard column names (img / query / label); with `relative_paths`,
    `img` is a string column of paths relative to the image folder `<root>_images` (as --image_root names it)."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    root.mkdir(parents=True)
    images = root.parent / f"{root.name}_images"  # outside root, or load_dataset would see an imagefolder
    images.mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        data = {"img": [], "query": [], "label": []}
        for row in rows(n):
            path = images / f"{split}_{row['file_name']}"
            write_image(path, row["colour"])
            data["img"].append(path.name if relative_paths else str(path))
            data["query"].append(row["question"])
            data["label"].append(row["answer"])
        image = Value("string") if relative_paths else ImageFeature()
        features = Features({"img": image, "query": Value("string"), "label": Value("string")})
        Dataset.from_dict(data, features=features).to_parquet(str(root / f"{split}.parquet"))
    return root


def make_vqav2_files(root: Path, n_train: int = 24, n_test: int = 8) -> dict[str, str]:
    """VQAv2-style questions/annotations JSON and COCO-named images."""
    paths = {}
    for split, n in (("train", n_train), ("val", n_test)):
        image_dir = root / f"{split}2014"
        image_dir.mkdir(parents=True)
        questions, annotations = [], []
        for i, row in enumerate(rows(n)):
            write_image(image_dir / f"COCO_{split}2014_{i:012d}.jpg", row["colour"])
            questions.append({"image_id": i, "question": row["question"], "question_id": 1000 + i})
            answers = [{"answer": row["answer"], "answer_id": k} for k in range(1, 11)]
            annotations.append({"question_id": 1000 + i, "image_id": i, "answers": answers})
        (root / f"{split}_questions.json").write_text(json.dumps({"questions": questions}))
        (root / f"{split}_annotations.json").write_text(json.dumps({"annotations": annotations}))
        paths[split] = (str(root / f"{split}_questions.json"), str(root / f"{split}_annotations.json"), str(image_dir))
    return paths


CORRUPTIONS = {  # how a file is broken -> when mmft finds it
    "zero_bytes": (lambda path: path.write_bytes(b""), "validation"),
    "not_an_image": (lambda path: path.write_text("<html>404 not found</html>\n"), "validation"),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "decode"),
}


def make_corrupt_easy_vqa(root: Path, n_train: int, n_test: int, n_bad_train: int, n_bad_test: int) -> dict:
    """An imagefolder of easy-VQA questions (one PNG copy per row) with evenly spread corrupt files.

    Returns {split: [(row, file name, corruption), ...]} of the files broken on purpose.
    """
    import shutil

    from mmft.data import load_easy_vqa

    source = load_easy_vqa()
    broken = {}
    for split, n, n_bad in (("train", n_train, n_bad_train), ("test", n_test, n_bad_test)):
        folder = root / split
        folder.mkdir(parents=True)
        data = source[split].cast_column("image", __import__("datasets").Image(decode=False)).select(range(n))
        bad_rows = {round((k + 0.5) * n / n_bad) for k in range(n_bad)} if n_bad else set()
        kinds = list(CORRUPTIONS) if split == "train" else list(CORRUPTIONS)[::-1]  # a decode-time one in test too
        broken[split] = []
        with (folder / "metadata.jsonl").open("w") as handle:
            for row, example in enumerate(data):
                name = f"{row:05d}.png"
                shutil.copyfile(example["image"]["path"], folder / name)
                if row in bad_rows:
                    kind = kinds[len(broken[split]) % len(kinds)]
                    CORRUPTIONS[kind][0](folder / name)
                    broken[split].append((row, name, kind))
                handle.write(
                    json.dumps({"file_name": name, "question": example["question"], "answers": example["answers"]})
                    + "\n"
                )
    return broken


def prepare_vqa(
    dataset, policy=None, answers=None, spec: dict | None = None, validation: bool = False, seed: int = 42, **task_args
):
    """The VQA task's validated data for `dataset` (a path or name); `spec` holds extra `SourceSpec` fields,
    `validation` says whether the run evaluates during training (`Task.prepare_data`)."""
    from mmft.data import SourceSpec
    from mmft.tasks.vqa.task import VQAArguments, VQATask

    task = VQATask(VQAArguments(**task_args))
    spec = SourceSpec(dataset=str(dataset), **(spec or {}))
    return task.prepare_data(spec, policy, answers, validation=validation, seed=seed)


def attach_vqa(data, processor, policy=None):
    """Attach the VQA transform to both splits of `data` (as the training path does)."""
    from mmft.tasks.vqa.task import VQATask

    VQATask().attach(data, processor, policy)
    return data


def _tar_member(tar, name: str, data: bytes) -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_webdataset(
    root: Path, n_shards: int = 4, rows_per_shard: int = 6, n_test: int = 8, bad: dict[str, str] | None = None
) -> Path:
    """WebDataset shards `train-0000k.tar` (+ `test-00000.tar`): `<key>.png` + `<key>.json` per sample, keys unique
    (`s<shard>_<i>`), questions answered by the image as in `rows`. Every sample differs (random colour, question and
    square position), so two batches never train alike. `bad`: {key: "empty_question" | "not_an_image"}."""
    import io
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    generator = np.random.default_rng(0)
    layouts = {f"train-{s:05d}.tar": [f"s{s}_{i}" for i in range(rows_per_shard)] for s in range(n_shards)}
    layouts["test-00000.tar"] = [f"t_{i}" for i in range(n_test)]
    for shard, keys in layouts.items():
        with tarfile.open(root / shard, "w") as tar:
            for key in keys:
                row = rows(4)[generator.integers(4)]
                top, left = generator.integers(0, 12, size=2)
                buffer = io.BytesIO()
                array = np.full((24, 24, 3), 255, dtype=np.uint8)
                array[top : top + 12, left : left + 12] = COLOURS[row["colour"]]
                Image.fromarray(array).save(buffer, "PNG")
                image = b"<html>404</html>" if bad.get(key) == "not_an_image" else buffer.getvalue()
                question = "" if bad.get(key) == "empty_question" else row["question"]
                _tar_member(tar, f"{key}.png", image)
                _tar_member(
                    tar,
                    f"{key}.json",
                    json.dumps({"question": question, "answers": [row["answer"]] * 3, "key": key}).encode(),
                )
    return root


def caption_rows(n: int) -> list[dict]:
    """Images of a coloured square (two colours x four places); two captions each, or one under `caption`."""
    places = ("top left", "top right", "bottom left", "bottom right")
    out = []
    for i in range(n):
        colour, place = ("red", "blue")[i % 2], places[(i // 2) % 4]
        captions = [f"a {colour} square at the {place}", f"the {place} holds a {colour} box number {i}"]
        row = {"file_name": f"{i}.png", "colour": colour, "place": (i // 2) % 4}
        row.update({"caption": captions[0]} if i % 5 == 4 else {"captions": captions})
        out.append(row)
    return out


def make_caption_folder(root: Path, n_train: int = 24, n_test: int = 8) -> Path:
    """An imagefolder whose `metadata.jsonl` rows carry `captions` (a list) or `caption` (one string)."""
    for split, n in (("train", n_train), ("test", n_test)):
        folder = root / split
        folder.mkdir(parents=True)
        with (folder / "metadata.jsonl").open("w") as handle:
            for row in caption_rows(n):
                array = np.full((24, 24, 3), 255, dtype=np.uint8)
                top, left = divmod(row["place"], 2)
                array[12 * top + 2 : 12 * top + 10, 12 * left + 2 : 12 * left + 10] = COLOURS[row["colour"]]
                Image.fromarray(array).save(folder / row["file_name"])
                handle.write(json.dumps({k: v for k, v in row.items() if k not in ("colour", "place")}) + "\n")
    return root


PLACES = ("top left", "top right", "bottom left", "bottom right")


def _square_image(path: Path, colour: str, place: int) -> None:
    array = np.full((24, 24, 3), 255, dtype=np.uint8)
    top, left = divmod(place, 2)
    array[12 * top + 2 : 12 * top + 10, 12 * left + 2 : 12 * left + 10] = COLOURS[colour]
    Image.fromarray(array).save(path)


def pair_captions(i: int, per_image: int = 5) -> list[str]:
    """`per_image` differently worded, unique captions of image `i` (a square: two colours x four places)."""
    colour, place = ("red", "blue")[i % 2], PLACES[(i // 2) % 4]
    words = (
        f"a {colour} square at the {place}",
        f"the {place} holds a {colour} box",
        f"one {colour} block in the {place} corner",
        f"a white picture with a {colour} patch, {place}",
        f"{colour} at the {place}, image {i}",
    )
    return [f"{words[k % len(words)]} ({k // len(words)})" if k >= len(words) else words[k] for k in range(per_image)]


def write_pair_images(folder: Path, split: str, n: int) -> list[str]:
    """`n` distinct square images `<split>_<i>.png` in `folder`; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{split}_{i}.png"
        _square_image(folder / name, ("red", "blue")[i % 2], (i // 2) % 4)
        names.append(name)
    return names


def make_flickr_csv(root: Path, n_train: int = 6, n_test: int = 4, per_image: int = 5) -> Path:
    """The Flickr30k layout as a table folder: `train.csv` / `test.csv` with one `image,caption` row per image-caption
    pair (`per_image` rows per image, in caption order), images under `root/images/`."""
    import csv

    for split, n in (("train", n_train), ("test", n_test)):
        names = write_pair_images(root / "images", split, n)
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "caption"])
            for i, name in enumerate(names):
                for caption in pair_captions(i, per_image):
                    writer.writerow([f"images/{name}", caption])
    return root


def make_coco_captions_json(root: Path, n_train: int = 6, n_test: int = 4, per_image: int = 5) -> dict[str, str]:
    """The same images and captions as `make_flickr_csv`, as COCO's `captions_<split>.json` (`images` +
    `annotations`), images under `root/images/`; returns the CaptionDataArguments fields."""
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        names = write_pair_images(root / "images", split, n)
        images = [{"id": i, "file_name": name} for i, name in enumerate(names)]
        annotations = [
            {"id": 100 * i + k, "image_id": i, "caption": caption}
            for i in range(n)
            for k, caption in enumerate(pair_captions(i, per_image))
        ]
        (root / f"captions_{split}.json").write_text(json.dumps({"images": images, "annotations": annotations}))
        files[split] = str(root / f"captions_{split}.json")
    return {"captions_file": files["train"], "eval_captions_file": files["test"], "image_dir": str(root / "images")}


def make_flickr_hub_layout(
    root: Path, n_train: int = 6, n_val: int = 2, n_test: int = 4, relative_paths: bool = False
) -> tuple[Path, Path]:
    """The Hub Flickr30k layout (`nlphuji/flickr30k`) as a local parquet folder: a single `test` split holding every
    row, one per image, with `image` (embedded, as on the Hub; or, with `relative_paths`, a string path relative to
    the image folder), `caption` (a list of five), `sentids`, `split` (train / val / test), `img_id` and `filename`.
    Returns (the dataset folder, the image folder, outside it)."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    root.mkdir(parents=True)
    images = root.parent / f"{root.name}_images"
    data: dict[str, list] = {"image": [], "caption": [], "sentids": [], "split": [], "img_id": [], "filename": []}
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    names = {split: write_pair_images(images / split, split, n) for split, n in sizes.items()}
    order = [(split, i) for split, n in sizes.items() for i in range(n)]
    order = order[1::2] + order[::2]  # the splits interleaved, as in the real file
    for number, (split, i) in enumerate(order):
        name = names[split][i]
        embedded = {"bytes": (images / split / name).read_bytes(), "path": name}
        data["image"].append(f"{split}/{name}" if relative_paths else embedded)
        data["caption"].append(pair_captions(i))
        data["sentids"].append([str(5 * number + k) for k in range(5)])
        data["split"].append(split)
        data["img_id"].append(str(number))
        data["filename"].append(name)
    features = Features(
        {
            "image": Value("string") if relative_paths else ImageFeature(),
            "caption": Sequence(Value("string")),
            "sentids": Sequence(Value("string")),
            "split": Value("string"),
            "img_id": Value("string"),
            "filename": Value("string"),
        }
    )
    Dataset.from_dict(data, features=features).to_parquet(str(root / "test.parquet"))
    return root, images


def make_vqa_answer_lists_csv(root: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """A VQA table folder (`train.csv` / `test.csv`: image,question,answers) whose answers cells hold several answers:
    a JSON list on even rows, `|`-separated on odd rows, and a plain single answer on every fourth row."""
    import csv

    root.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with (root / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "question", "answers"])
            for i, row in enumerate(rows(n)):
                name = f"{split}_{row['file_name']}"
                write_image(root / name, row["colour"])
                answer, other = row["answer"], "maybe"
                if i % 4 == 3:
                    cell = answer
                elif i % 2 == 0:
                    cell = json.dumps([answer, answer, other])
                else:
                    cell = f"{answer}|{answer} | {other}"
                writer.writerow([name, row["question"] + " (a|b)", cell])
    return root
