"""Synthetic "scenes" (1-3 coloured shapes, several true captions each) for offline retrieval and captioning demos.

Nothing external goes in: every row is a pure function of (seed, split, index), drawn with PIL and numpy, and
`load_scenes` caches the rows under the datasets cache on first use (docs/scenes.md).
At the defaults: 99.8% of test captions are unique; 96.7% of test images have content no other test image has;
vocabulary 58 words; 13.7 words on average.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage
from PIL import ImageDraw

# Part of the `from_generator` cache key: bump it whenever the generated rows change.
VERSION = 1
SPLITS = {"train": 0, "test": 1}
FEATURES = Features(
    {
        "image": Image(),
        "captions": List(Value("string")),
        "objects": List(
            {
                "shape": Value("string"),
                "colour": Value("string"),
                "size": Value("string"),
                "x": Value("float32"),  # centre, as a fraction of the width (0 = left edge)
                "y": Value("float32"),  # centre, as a fraction of the height (0 = top edge)
            }
        ),
    }
)
COLOURS = {
    "red": (215, 35, 35),
    "orange": (245, 135, 15),
    "yellow": (225, 190, 0),
    "green": (35, 150, 55),
    "blue": (35, 75, 215),
    "purple": (135, 50, 185),
    "pink": (245, 110, 185),
    "black": (25, 25, 25),
}
SIZES = {"small": 0.09, "large": 0.16}  # half-extent of the shape, as a fraction of the image side
# The words a caption may use for a shape, colour or size; the first is the name in the `objects` column.
WORDS = {
    "circle": ("circle", "disk"),
    "square": ("square", "box"),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus"),
    "purple": ("purple", "violet"),
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
NUMBERS = {2: "two", 3: "three"}
_JITTER = 0.15  # an object's centre moves at most this share of a grid cell away from the cell's centre
_GAP = 0.03  # the least space between two objects' bounding boxes, as a fraction of the image side
_NOISE = 3.0  # standard deviation of the pixel noise, in 0-255 levels
_SUPERSAMPLE = 4


def _ring(cx: float, cy: float, radii: list[float], start: float = -np.pi / 2) -> list[tuple[float, float]]:
    angles = start + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]


def _cross(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    arm, end = 0.32 * r, 0.9 * r
    corners = [(arm, end), (arm, arm), (end, arm), (end, -arm), (arm, -arm), (arm, -end)]
    right = [(cx + dx, cy + dy) for dx, dy in corners]
    return right + [(2 * cx - x, 2 * cy - y) for x, y in right]  # the left half is the right half turned 180 degrees


# A shape is its outline: centre and half-extent (pixels) -> polygon vertices within the box centre +/- r.
SHAPES = {
    "circle": lambda cx, cy, r: _ring(cx, cy, [r] * 48),
    "square": lambda cx, cy, r: [
        (cx - 0.85 * r, cy - 0.85 * r),
        (cx + 0.85 * r, cy - 0.85 * r),
        (cx + 0.85 * r, cy + 0.85 * r),
        (cx - 0.85 * r, cy + 0.85 * r),
    ],
    "triangle": lambda cx, cy, r: _ring(cx, cy + 0.25 * r, [r] * 3),
    "star": lambda cx, cy, r: _ring(cx, cy + 0.1 * r, [r, 0.45 * r] * 5),
    "diamond": lambda cx, cy, r: [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)],
    "cross": _cross,
}


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene, as in the `objects` column (`SceneObject(**row_object)` rebuilds it)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    @property
    def cell(self) -> tuple[int, int]:
        return cell(self.x, self.y)


def cell(x: float, y: float) -> tuple[int, int]:
    """(row, column) of a centre in the 3x3 grid that captions describe: (0, 0) is top left, (1, 1) the centre."""
    return min(int(y * 3), 2), min(int(x * 3), 2)


def _sample_objects(rng: np.random.Generator) -> list[SceneObject]:
    """1-3 objects with distinct (shape, colour), in distinct grid cells, whose bounding boxes keep apart."""
    count = int(rng.choice([1, 2, 3], p=[0.15, 0.4, 0.45]))
    kinds = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    picks = [kinds[i] for i in rng.choice(len(kinds), count, replace=False)]
    sizes = [("small", "large")[i] for i in rng.integers(0, 2, count)]
    extents = np.array([SIZES[size] for size in sizes])
    for _ in range(1000):
        rows, cols = np.divmod(rng.choice(9, count, replace=False), 3)
        xy = (np.stack([cols, rows], axis=1) + 0.5 + rng.uniform(-_JITTER, _JITTER, (count, 2))) / 3  # (n, 2)
        xy = np.clip(xy, extents[:, None] + 0.01, 1 - extents[:, None] - 0.01)
        apart = np.abs(xy[:, None, :] - xy[None, :, :]).max(-1) >= extents[:, None] + extents[None, :] + _GAP
        if (apart | np.eye(count, dtype=bool)).all():
            xy = np.round(xy, 4).astype(np.float32)
            return [SceneObject(s, c, z, float(x), float(y)) for (s, c), z, (x, y) in zip(picks, sizes, xy)]
    raise RuntimeError("no layout found")  # does not happen: three large objects fit in the corners


def _render(objects: list[SceneObject], image_size: int, rng: np.random.Generator) -> bytes:
    side = image_size * _SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(222, 251, 3))  # a light, slightly tinted grey
    canvas = PILImage.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        fill = np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-12, 13, 3), 0, 255)
        draw.polygon(SHAPES[obj.shape](obj.x * side, obj.y * side, SIZES[obj.size] * side), fill=tuple(map(int, fill)))
    pixels = np.asarray(canvas.resize((image_size, image_size), PILImage.BOX), dtype=np.int16)  # (H, W, 3)
    pixels = pixels + np.rint(rng.normal(0.0, _NOISE, pixels.shape)).astype(np.int16)
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# Caption templates. Fields are drawn afresh for every caption (synonyms, object order, optional sizes), so one
# template gives many wordings; an image's captions come from distinct templates while there are enough of them.
SINGLE_TEMPLATES = (
    "{a} {where}",
    "there is {a} {where}",
    "{where} there is {a}",
    "{where} is {a}",
    "{picture} {a} {where}",
    "{one} {bare} {where}",
    "the {size} {shape} {where} is {colour}",
)
MULTI_TEMPLATES = (
    "{count}: {listed}",
    "{picture} {listed}",
    "{placed}",
    "{a} {is}{relation} {b}{rest}",
    "the {the_a} is {relation} the {the_b}{the_rest}",
)


def _pick(options: list[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def lexicon(rng: np.random.Generator) -> dict[str, str]:
    """One wording per shape, colour and size for a whole caption or question, so two crosses are never 'a cross
    and a plus'."""
    return {value: _pick(options, rng) for value, options in WORDS.items()}


def article(phrase: str) -> str:
    """'a red circle', 'an orange star'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def join_phrases(phrases: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def noun(obj: SceneObject, words: dict[str, str], sized: bool = True) -> str:
    """'small red circle' (no article), in the caption's wording."""
    parts = (obj.size, obj.colour, obj.shape) if sized else (obj.colour, obj.shape)
    return " ".join(words.get(part, part) for part in parts)


def places(grid_cell: tuple[int, int], short: bool = False) -> list[str]:
    """The wordings of a grid cell ("at the top left", "in the top left corner", ...), the plainest first; `short`
    keeps to the shortest ones (for three-object captions)."""
    row, col = grid_cell
    vertical, horizontal = ("top", "", "bottom")[row], ("left", "", "right")[col]
    if vertical and horizontal:
        return [f"at the {vertical} {horizontal}"] + ([] if short else [f"in the {vertical} {horizontal} corner"])
    if horizontal:
        return [f"on the {horizontal}"] + ([] if short else [f"on the {horizontal} side"])
    if vertical:
        return [f"at the {vertical}", f"near the {vertical}"]
    return ["in the centre", "in the middle"]


def _where(obj: SceneObject, rng: np.random.Generator, short: bool = False) -> str:
    """Where an object is, by its grid cell, in one of its wordings."""
    return _pick(places(obj.cell, short), rng)


def _relation(a: SceneObject, b: SceneObject, rng: np.random.Generator) -> str:
    """A phrase true of a relative to b; distinct cells make at least one apply."""
    (row_a, col_a), (row_b, col_b) = a.cell, b.cell
    options = []
    if col_a != col_b:
        side = "left" if col_a < col_b else "right"
        options += [f"to the {side} of", f"{side} of"]
    if row_a != row_b:
        options += ["above"] if row_a < row_b else ["below", "under"]
    return _pick(options, rng)


def _single_fields(obj: SceneObject, rng: np.random.Generator) -> dict[str, str]:
    words = lexicon(rng)
    return {
        "a": article(noun(obj, words)),
        "bare": noun(obj, words),
        "where": _where(obj, rng),
        "size": words[obj.size],
        "shape": words.get(obj.shape, obj.shape),
        "colour": words.get(obj.colour, obj.colour),
        "one": _pick(["one", "a single", "just one"], rng),
        "picture": _pick(["a picture of", "an image of", "a drawing of"], rng),
    }


def _multi_fields(objs: list[SceneObject], rng: np.random.Generator) -> dict[str, str]:
    """With three objects only the lists name sizes, and places are worded briefly, so captions stay short."""
    first, second, *rest = objs
    short, words = bool(rest), lexicon(rng)
    fields = {
        "count": _pick(["{} shapes", "{} objects", "there are {} shapes"], rng).format(NUMBERS[len(objs)]),
        "picture": _pick(["a picture of", "an image of", "a drawing of"], rng),
        "listed": join_phrases([article(noun(obj, words)) for obj in objs]),
        "placed": join_phrases([f"{article(noun(obj, words, not short))} {_where(obj, rng, short)}" for obj in objs]),
        "a": article(noun(first, words, sized=not short and rng.random() < 0.5)),
        "is": "is " if short else _pick(["is ", ""], rng),
        "relation": _relation(first, second, rng),
        "b": article(noun(second, words, sized=not short and rng.random() < 0.5)),
        "the_a": noun(first, words, sized=False),
        "the_b": noun(second, words, sized=False),
        "rest": "",
        "the_rest": "",
    }
    if rest:
        where = _where(rest[0], rng, short=True)
        fields["rest"] = f" and {article(noun(rest[0], words, sized=False))} is {where}"
        fields["the_rest"] = f" and the {noun(rest[0], words, sized=False)} is {where}"
    return fields


def _fields(objects: list[SceneObject], rng: np.random.Generator) -> dict[str, str]:
    """Every template field for one caption, with the objects in a fresh random order."""
    objs = [objects[i] for i in rng.permutation(len(objects))]
    return _single_fields(objs[0], rng) if len(objs) == 1 else _multi_fields(objs, rng)


def _captions(objects: list[SceneObject], count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct captions, each true of the objects."""
    templates = SINGLE_TEMPLATES if len(objects) == 1 else MULTI_TEMPLATES
    captions: list[str] = []
    for attempt in range(100 * count):
        if attempt % len(templates) == 0:
            order = rng.permutation(len(templates))  # each round of templates in a new order
        caption = templates[order[attempt % len(templates)]].format(**_fields(objects, rng))
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            return captions
    raise RuntimeError(f"could not word {count} distinct captions")  # only for very large counts


def _check(split: str, image_size: int, captions_per_image: int, seed: int, index: int = 0) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 (small shapes vanish below it), got {image_size}")
    if not 1 <= captions_per_image <= 20:
        raise ValueError(f"captions_per_image must be between 1 and 20, got {captions_per_image}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")


def scene(index: int, split: str = "train", seed: int = 0, image_size: int = 64, captions_per_image: int = 5) -> dict:
    """Row `index` of a split, a function of (seed, split, index) alone: {"image": {"bytes", "path"}, "captions",
    "objects"}. `load_scenes` stores these rows; this makes one on its own, in any order."""
    _check(split, image_size, captions_per_image, seed, index)
    # Separate streams, so that changing the captions leaves the images as they are and the other way round.
    streams = np.random.SeedSequence([seed, SPLITS[split], index]).spawn(3)
    layout, wording, pixels = (np.random.default_rng(stream) for stream in streams)
    objects = _sample_objects(layout)
    return {
        "image": {"bytes": _render(objects, image_size, pixels), "path": None},
        "captions": _captions(objects, captions_per_image, wording),
        "objects": [vars(obj) for obj in objects],
    }


def _rows(split: str, num_rows: int, seed: int, image_size: int, captions_per_image: int, version: int):
    for index in range(num_rows):
        yield scene(index, split, seed, image_size, captions_per_image)


def load_scenes(
    num_train: int = 6000, num_test: int = 1000, image_size: int = 64, captions_per_image: int = 5, seed: int = 0
) -> DatasetDict:
    """train and test splits of synthetic scenes: PNG `image`, `captions` (list of str), `objects` (list of dicts)."""
    counts = {"train": num_train, "test": num_test}
    if min(counts.values()) < 1:
        raise ValueError(f"each split needs at least one row, got {counts}")
    _check("train", image_size, captions_per_image, seed)
    # from_generator caches the Arrow table under the datasets cache, keyed by the generator and its arguments.
    return DatasetDict(
        {
            split: Dataset.from_generator(
                _rows,
                features=FEATURES,
                split=split,
                gen_kwargs=dict(
                    split=split,
                    num_rows=count,
                    seed=seed,
                    image_size=image_size,
                    captions_per_image=captions_per_image,
                    version=VERSION,
                ),
            )
            for split, count in counts.items()
        }
    )


def content_key(objects: list[dict]) -> tuple:
    """What captions can say about an image: each object's shape, colour, size and grid cell, sorted."""
    return tuple(sorted((o["shape"], o["colour"], o["size"], cell(o["x"], o["y"])) for o in objects))


def _unique_share(keys: list) -> float:
    counts = Counter(keys)
    return sum(counts[key] == 1 for key in keys) / len(keys)


def caption_statistics(dataset) -> dict:
    """Figures for a split (a `Dataset`, or a dict of columns): how unique its captions and images are, and its words.

    `unique_captions` is unique strings / all captions; `unique_caption_sets` and `unique_content` are the shares
    of images whose caption list, or whose `content_key`, no other image in the split has.
    """
    per_image = [list(captions) for captions in dataset["captions"]]
    captions = [caption for group in per_image for caption in group]
    words = [re.findall(r"[a-z]+", caption) for caption in captions]
    lengths = np.array([len(w) for w in words])
    figures = {
        "images": len(per_image),
        "captions": len(captions),
        "unique_captions": len(set(captions)) / len(captions),
        "unique_caption_sets": _unique_share([tuple(sorted(group)) for group in per_image]),
        "vocabulary_size": len({word for w in words for word in w}),
        "mean_words": float(lengths.mean()),
        "min_words": int(lengths.min()),
        "max_words": int(lengths.max()),
    }
    if "objects" in getattr(dataset, "column_names", dataset):
        figures["unique_content"] = _unique_share([content_key(objects) for objects in dataset["objects"]])
    return figures
