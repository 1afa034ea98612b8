"""Synthetic scenes: rows depend on (seed, split, index) alone, the cache is reused, captions are true, figures hold."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image as PILImage

from mmft.data import scenes
from mmft.data.scenes import COLOURS, SHAPES, SIZES, WORDS, caption_statistics, cell, load_scenes, scene

ROOT = Path(__file__).resolve().parents[1]
# Every word a caption may use for a shape, colour or size -> the value in the `objects` column.
VALUE_OF = {value: value for value in (*COLOURS, *SHAPES, *SIZES)} | {
    word: value for value, words in WORDS.items() for word in words
}
COUNTS = {"one": 1, "single": 1, "two": 2, "three": 3}
RELATIONS = {"left", "right", "above", "below", "under"}
PLACES = {"top", "bottom", "left", "right", "centre", "middle"}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """Calling it points the datasets cache at a new empty folder."""
    folders = iter(range(100))

    def switch() -> Path:
        folder = tmp_path / f"cache{next(folders)}"
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(folder))
        return folder

    return switch


def _raw(split: datasets.Dataset) -> list[tuple]:
    rows = split.cast_column("image", datasets.Image(decode=False))
    return [(row["image"]["bytes"], row["captions"], row["objects"]) for row in rows]


def _region(tokens: list[str]) -> tuple[int, int]:
    """The grid cell that place words ("at the top left", "in the centre", "on the right side") name."""
    row = 0 if "top" in tokens else 2 if "bottom" in tokens else 1
    return row, 0 if "left" in tokens else 2 if "right" in tokens else 1


def _wrong_claims(caption: str, objects: list[dict]) -> list[str]:
    """What the caption says that the objects contradict: empty when every word of it is true of them."""
    tokens = re.findall(r"[a-z]+", caption)
    named = ({VALUE_OF[t] for t in tokens if VALUE_OF.get(t) in kind} for kind in (COLOURS, SHAPES, SIZES))
    colours, shapes, sizes = named
    problems = [f"count {t}" for t in tokens if COUNTS.get(t, len(objects)) != len(objects)]
    if colours != {o["colour"] for o in objects} or shapes != {o["shape"] for o in objects}:
        problems.append("colours or shapes")
    if len(objects) == 1:
        obj = objects[0]
        if not sizes <= {obj["size"]} or _region(tokens) != cell(obj["x"], obj["y"]):
            problems.append("size or place")
        return problems
    # Mentions are "<colour> <shape>" pairs; the words up to the next mention say where that object is.
    kinds = [COLOURS if VALUE_OF.get(t) in COLOURS else SHAPES if VALUE_OF.get(t) in SHAPES else None for t in tokens]
    starts = [i for i in range(len(tokens) - 1) if kinds[i] is COLOURS and kinds[i + 1] is SHAPES]
    found = {(o["colour"], o["shape"]): o for o in objects}
    mentioned = [found.get((VALUE_OF[tokens[i]], VALUE_OF[tokens[i + 1]])) for i in starts]
    if None in mentioned:
        return problems + ["a colour on the wrong shape"]
    for k, (start, obj) in enumerate(zip(starts, mentioned)):
        if VALUE_OF.get(tokens[start - 1]) in SIZES and VALUE_OF[tokens[start - 1]] != obj["size"]:
            problems.append(f"size of {obj}")
        after = tokens[start + 2 : starts[k + 1] if k + 1 < len(starts) else None]
        (row, col), placed = cell(obj["x"], obj["y"]), set(after) & PLACES
        if set(after) & RELATIONS and k + 1 < len(mentioned) and ("of" in after or not set(after) & {"left", "right"}):
            other_row, other_col = cell(mentioned[k + 1]["x"], mentioned[k + 1]["y"])
            truth = {"left": col < other_col, "right": col > other_col, "above": row < other_row}
            truth |= {"below": row > other_row, "under": row > other_row}
            problems += [f"{word} of {obj}" for word in set(after) & RELATIONS if not truth[word]]
        elif placed and _region(after) != (row, col):
            problems.append(f"place of {obj}")
    return problems


def _mirrored(objects: list[dict]) -> list[dict]:
    return [obj | {"x": 1.0 - obj["x"]} for obj in objects]


def test_two_fresh_generations_are_bit_identical_and_a_new_seed_differs(fresh_cache):
    first_cache, first = fresh_cache(), load_scenes(num_train=6, num_test=5)
    fresh_cache()
    second = load_scenes(num_train=6, num_test=5)
    assert not any(Path(f["filename"]).is_relative_to(first_cache) for f in second["test"].cache_files)
    for split in ("train", "test"):
        assert _raw(first[split]) == _raw(second[split])
    assert _raw(first["train"])[0] != _raw(first["test"])[0]  # the split is part of the seed
    other = load_scenes(num_train=6, num_test=5, seed=1)
    for ours, theirs in zip(_raw(first["test"]), _raw(other["test"])):
        assert ours[0] != theirs[0] and ours[1] != theirs[1]


def test_the_cache_is_reused_and_keyed_by_the_arguments(fresh_cache, monkeypatch):
    fresh_cache()
    data = load_scenes(num_train=4, num_test=3)

    def no_generation(*args, **kwargs):
        raise AssertionError("rows were generated again")

    monkeypatch.setattr(scenes, "scene", no_generation)
    again = load_scenes(num_train=4, num_test=3)  # would fail if the generator ran
    assert again["test"].cache_files == data["test"].cache_files
    with pytest.raises(Exception) as error:
        load_scenes(num_train=4, num_test=4)  # negative control: other arguments, a new table
    causes = [error.value]
    while causes[-1].__cause__ or causes[-1].__context__:
        causes.append(causes[-1].__cause__ or causes[-1].__context__)
    assert any("generated again" in str(cause) for cause in causes)


def test_a_row_is_a_function_of_its_index_alone(fresh_cache):
    fresh_cache()
    stored = _raw(load_scenes(num_train=3, num_test=6, image_size=48, captions_per_image=3)["test"])
    for index in reversed(range(6)):  # made one by one, out of order
        row = scene(index, "test", image_size=48, captions_per_image=3)
        assert (row["image"]["bytes"], row["captions"], row["objects"]) == stored[index]
    assert PILImage.open(io.BytesIO(stored[0][0])).size == (48, 48)


def test_captions_are_true_of_the_objects():
    rows = [scene(index, "test") for index in range(300)]
    checked = mirrored_caught = 0
    for row in rows:
        objects = row["objects"]
        for caption in row["captions"]:
            assert _wrong_claims(caption, objects) == [], caption
            if {"left", "right"} & set(caption.split()):  # negative control: the mirror image makes it false
                assert _wrong_claims(caption, _mirrored(objects)), caption
                mirrored_caught += 1
            checked += 1
    assert checked == 1500 and mirrored_caught > 300
    assert {len(row["objects"]) for row in rows} == {1, 2, 3}


def test_the_checker_catches_a_wrong_colour_size_or_count():
    objects = [
        {"shape": "circle", "colour": "red", "size": "small", "x": 0.2, "y": 0.5},
        {"shape": "star", "colour": "blue", "size": "large", "x": 0.8, "y": 0.2},
    ]
    assert _wrong_claims("a tiny red disk is left of a big blue star", objects) == []
    for false in (
        "a tiny red star is left of a big blue circle",
        "a big red disk is left of a big blue star",
        "three shapes: a small red circle and a big blue star",
        "the blue star is left of the red circle",
        "a small red circle on the left and a big green star at the top right",
    ):
        assert _wrong_claims(false, objects), false


def test_captions_are_short_lowercase_and_distinct_per_image():
    for index in range(200):
        captions = scene(index, "train", captions_per_image=10)["captions"]
        assert len(set(captions)) == 10
        for caption in captions:
            assert caption == caption.lower() and 5 <= len(re.findall(r"[a-z]+", caption)) <= 22, caption


def test_images_show_their_objects_apart():
    for index in range(100):
        row = scene(index, "train")
        pixels = np.asarray(PILImage.open(io.BytesIO(row["image"]["bytes"])), dtype=int)  # (H, W, 3)
        boxes = []
        for obj in row["objects"]:
            x, y = int(obj["x"] * 64), int(obj["y"] * 64)
            nearest = min(COLOURS, key=lambda name: np.abs(pixels[y, x] - COLOURS[name]).max())
            assert nearest == obj["colour"] and np.abs(pixels[y, x] - COLOURS[nearest]).max() <= 30
            boxes.append((obj["x"], obj["y"], SIZES[obj["size"]]))
        for i, (xa, ya, ra) in enumerate(boxes):
            for xb, yb, rb in boxes[i + 1 :]:
                assert max(abs(xa - xb), abs(ya - yb)) >= ra + rb  # bounding boxes do not overlap


def test_caption_statistics_on_a_known_table():
    objects = [{"shape": "circle", "colour": "red", "size": "small", "x": 0.1, "y": 0.1}]
    table = {
        "captions": [["a red circle", "a red circle"], ["a blue box", "two shapes"], ["a red circle", "a red circle"]],
        "objects": [objects, objects, [objects[0] | {"x": 0.9}]],
    }
    figures = caption_statistics(table)
    assert figures["captions"] == 6 and figures["unique_captions"] == pytest.approx(3 / 6)
    assert figures["unique_caption_sets"] == pytest.approx(1 / 3) and figures["unique_content"] == pytest.approx(1 / 3)
    assert (figures["vocabulary_size"], figures["mean_words"], figures["max_words"]) == (7, pytest.approx(17 / 6), 3)


def test_default_test_split_figures_and_speed_match_the_docs():
    start = time.process_time()
    rows = [scene(index, "test") for index in range(1000)]
    seconds = time.process_time() - start
    assert seconds < 10, f"{seconds:.1f} s of CPU for 1,000 scenes"  # about 2.5 s on one core when measured
    figures = caption_statistics({"captions": [r["captions"] for r in rows], "objects": [r["objects"] for r in rows]})
    stated = [
        f"{figures['unique_captions']:.1%} of test captions are unique",
        f"{figures['unique_content']:.1%}",
        f"vocabulary {figures['vocabulary_size']} words",
        f"{figures['mean_words']:.1f} words",
    ]
    docs = (ROOT / "docs" / "scenes.md").read_text(encoding="utf-8")
    for text in stated:
        assert text in docs and text in scenes.__doc__, text


@pytest.mark.parametrize(
    "arguments", [{"split": "val"}, {"image_size": 16}, {"captions_per_image": 0}, {"seed": -1}, {"index": -1}]
)
def test_bad_arguments_name_the_problem(arguments):
    options = {"index": 0} | arguments
    with pytest.raises(ValueError, match="split|image_size|captions_per_image|non-negative"):
        scene(**options)
