"""Question-answer conversations about the synthetic scenes, LLaVA style, for offline generative VQA.

Each row is a scene of `mmft.data.scenes` (the same image and objects as `scene(index, split, seed)`) with 2-4
turns: a question worded from several templates and synonyms, and an answer that is a short phrase, true of the
objects and the only right one ("two", "red", "at the top left", "above and to the left of the blue square",
"a large red circle and a small green star", "yes"); "describe" answers with the scene's first caption.
Every row is a pure function of (seed, split, index); `load_scenes_conversations` caches the rows under the
datasets cache on first use (docs/scenes_conversations.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, List, Value

from . import scenes
from .scenes import SPLITS, SceneObject, article, join_phrases, lexicon, noun, places, scene

# Part of the `from_generator` cache key with `scenes.VERSION`: bump it whenever the conversations change.
VERSION = 1
FEATURES = Features(
    {
        "image": Image(),
        "conversations": List({"from": Value("string"), "value": Value("string")}),
        "question_types": List(Value("string")),  # one per human turn, in order
        "objects": scenes.FEATURES["objects"],
    }
)
IMAGE_TOKEN = "<image>"
COUNT_WORDS = {1: "one", **scenes.NUMBERS}
_CONVERSATION_STREAM = 3  # scene() spawns streams 0-2 of the row's seed sequence; the questions draw from the fourth

# Several wordings per question type, so that a model has to read the question, not recognise one string. Fields:
# {ref} an object named by a property that picks it out alone, {a}/{b} "<colour> <shape>", {an} the same with its
# article; each question draws its own synonyms (disk, box, violet, ...).
TEMPLATES = {
    "count": (
        "how many shapes are there?",
        "how many objects are in the picture?",
        "how many shapes can you see?",
        "count the shapes in the image.",
        "what is the number of objects shown?",
    ),
    "colour_of": (
        "what colour is the {ref}?",
        "which colour does the {ref} have?",
        "what is the colour of the {ref}?",
        "tell me the colour of the {ref}.",
    ),
    "shape_of": (
        "what shape is the {ref}?",
        "what kind of shape is the {ref}?",
        "which shape is the {ref}?",
        "name the shape of the {ref}.",
    ),
    "size_of": (
        "is the {a} small or large?",
        "what size is the {a}?",
        "how big is the {a}?",
        "is the {a} big or little?",
    ),
    "where": (
        "where is the {a}?",
        "in which part of the picture is the {a}?",
        "where can the {a} be found?",
        "whereabouts is the {a} in the image?",
    ),
    "relation": (
        "where is the {a} relative to the {b}?",
        "where is the {a} compared with the {b}?",
        "how is the {a} placed relative to the {b}?",
        "in relation to the {b}, where is the {a}?",
    ),
    "exists": (
        "is there {an}?",
        "does the picture contain {an}?",
        "can you see {an}?",
        "is there {an} in the image?",
    ),
    "list": (
        "what shapes are in the picture?",
        "list the objects in the image.",
        "which shapes can you see?",
        "name every shape in the picture.",
    ),
    "describe": (
        "describe the picture.",
        "describe what you see.",
        "give a short description of the image.",
        "write a caption for this image.",
    ),
}


def _pick(options, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _ask(kind: str, rng: np.random.Generator, **fields: str) -> str:
    return _pick(TEMPLATES[kind], rng).format(**fields)


def _by_place(obj: SceneObject, rng: np.random.Generator) -> str:
    """'shape at the top left', 'object in the middle': a grid cell holds one object, so its place picks it out."""
    return f"{_pick(('shape', 'object'), rng)} {_pick(places(obj.cell), rng)}"


def _unique(objects: list[SceneObject], obj: SceneObject, attribute: str) -> bool:
    return sum(getattr(o, attribute) == getattr(obj, attribute) for o in objects) == 1


def _count(objects, scene_row, rng):
    return _ask("count", rng), COUNT_WORDS[len(objects)]


def _colour_of(objects, scene_row, rng):
    """Name the object by its shape when no other object has that shape (half the time), else by its place."""
    obj = _pick(objects, rng)
    by_shape = _unique(objects, obj, "shape") and rng.random() < 0.5
    ref = lexicon(rng).get(obj.shape, obj.shape) if by_shape else _by_place(obj, rng)
    return _ask("colour_of", rng, ref=ref), obj.colour


def _shape_of(objects, scene_row, rng):
    """Name the object by its colour when no other object has that colour (half the time), else by its place."""
    obj = _pick(objects, rng)
    by_colour = _unique(objects, obj, "colour") and rng.random() < 0.5
    colour = lexicon(rng).get(obj.colour, obj.colour)
    ref = f"{colour} {_pick(('shape', 'object', 'thing'), rng)}" if by_colour else _by_place(obj, rng)
    return _ask("shape_of", rng, ref=ref), obj.shape


def _size_of(objects, scene_row, rng):
    obj = _pick(objects, rng)
    return _ask("size_of", rng, a=noun(obj, lexicon(rng), sized=False)), obj.size


def _where(objects, scene_row, rng):
    obj = _pick(objects, rng)
    return _ask("where", rng, a=noun(obj, lexicon(rng), sized=False)), places(obj.cell)[0]


def relation_phrase(a: SceneObject, b: SceneObject) -> str:
    """Where a is relative to b by their grid cells, every direction that holds: 'above and to the left of'."""
    (row_a, col_a), (row_b, col_b) = a.cell, b.cell
    vertical = "above" if row_a < row_b else "below" if row_a > row_b else ""
    horizontal = "to the left of" if col_a < col_b else "to the right of" if col_a > col_b else ""
    if vertical and horizontal:
        return f"{vertical} and {horizontal}"
    return vertical or horizontal  # distinct cells: at least one of them


def _relation(objects, scene_row, rng):
    a, b = (objects[i] for i in rng.choice(len(objects), 2, replace=False))
    words = lexicon(rng)
    question = _ask("relation", rng, a=noun(a, words, sized=False), b=noun(b, words, sized=False))
    return question, f"{relation_phrase(a, b)} the {noun(b, {}, sized=False)}"


def _exists(objects, scene_row, rng):
    """Yes half the time. A 'no' asks about a present object with its colour or its shape changed, so that the
    question can only be answered by seeing both."""
    obj = _pick(objects, rng)
    present = {(o.shape, o.colour) for o in objects}
    if rng.random() >= 0.5:
        if rng.random() < 0.5:
            obj = replace(obj, colour=_pick([c for c in scenes.COLOURS if (obj.shape, c) not in present], rng))
        else:
            obj = replace(obj, shape=_pick([s for s in scenes.SHAPES if (s, obj.colour) not in present], rng))
    answer = "yes" if (obj.shape, obj.colour) in present else "no"
    return _ask("exists", rng, an=article(noun(obj, lexicon(rng), sized=False))), answer


def list_phrase(objects: list[SceneObject]) -> str:
    """Every object with its size, colour and shape, in reading order (grid rows top to bottom, then left to right):
    'a large red circle and a small green star'."""
    return join_phrases([article(noun(obj, {})) for obj in sorted(objects, key=lambda o: o.cell)])


def _list(objects, scene_row, rng):
    return _ask("list", rng), list_phrase(objects)


def _describe(objects, scene_row, rng):
    return _ask("describe", rng), scene_row["captions"][0]


# Question type -> (objects, scene row, rng) -> (question, answer). `relation` needs two objects.
QUESTIONS: dict[str, Callable] = {
    "count": _count,
    "colour_of": _colour_of,
    "shape_of": _shape_of,
    "size_of": _size_of,
    "where": _where,
    "relation": _relation,
    "exists": _exists,
    "list": _list,
    "describe": _describe,
}
_MIN_OBJECTS = {"relation": 2}


def _check_turns(turns: int | tuple[int, int]) -> tuple[int, int]:
    low, high = (turns, turns) if isinstance(turns, int) else tuple(turns)
    most = len(QUESTIONS) - len(_MIN_OBJECTS)  # what a one-object scene can be asked
    if not 1 <= low <= high <= most:
        raise ValueError(f"turns must be a number or a (least, most) pair between 1 and {most}, got {turns}")
    return low, high


def conversation(
    index: int, split: str = "train", seed: int = 0, image_size: int = 64, turns: int | tuple[int, int] = (2, 4)
) -> dict:
    """Row `index` of a split, a function of (seed, split, index) alone: {"image", "conversations", "question_types",
    "objects"}. The image and objects are `scene(index, split, seed, image_size)`'s; each turn asks a different
    question type."""
    low, high = _check_turns(turns)
    row = scene(index, split, seed, image_size)
    objects = [SceneObject(**obj) for obj in row["objects"]]
    entropy = [seed, SPLITS[split], index]
    rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(_CONVERSATION_STREAM,)))
    askable = [kind for kind in QUESTIONS if len(objects) >= _MIN_OBJECTS.get(kind, 1)]
    kinds = [askable[i] for i in rng.choice(len(askable), int(rng.integers(low, high + 1)), replace=False)]
    messages = []
    for kind in kinds:
        question, answer = QUESTIONS[kind](objects, row, rng)
        messages += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    messages[0]["value"] = f"{IMAGE_TOKEN}\n{messages[0]['value']}"
    return {"image": row["image"], "conversations": messages, "question_types": kinds, "objects": row["objects"]}


def _rows(split: str, num_rows: int, seed: int, image_size: int, turns: tuple[int, int], versions: tuple[int, int]):
    for index in range(num_rows):
        yield conversation(index, split, seed, image_size, turns)


def load_scenes_conversations(
    num_train: int = 6000,
    num_test: int = 1000,
    image_size: int = 64,
    seed: int = 0,
    turns: int | tuple[int, int] = (2, 4),
) -> DatasetDict:
    """train and test splits: PNG `image`, `conversations` (LLaVA style: [{"from": "human" | "gpt", "value"}], the
    first question starting with "<image>\\n"), `question_types` (one per question) and the scene's `objects`."""
    counts = {"train": num_train, "test": num_test}
    if min(counts.values()) < 1:
        raise ValueError(f"each split needs at least one row, got {counts}")
    turns = _check_turns(turns)
    scene(0, "train", seed, image_size)  # checks image_size and seed before any generation starts
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
                    turns=turns,
                    versions=(scenes.VERSION, VERSION),
                ),
            )
            for split, count in counts.items()
        }
    )


def conversation_statistics(dataset) -> dict:
    """Figures for a split (a `Dataset`, or a dict of columns): turns per image, each question type's share,
    distinct question and answer strings, and answer length in words (`describe`, a caption, apart)."""
    types = [kind for row in dataset["question_types"] for kind in row]
    messages = [message for row in dataset["conversations"] for message in row]
    questions = [m["value"].removeprefix(f"{IMAGE_TOKEN}\n") for m in messages if m["from"] == "human"]
    answers = [m["value"] for m in messages if m["from"] == "gpt"]
    short = [len(a.split()) for a, kind in zip(answers, types) if kind != "describe"]
    per_image = [len(row) for row in dataset["question_types"]]
    exists = [a for a, kind in zip(answers, types) if kind == "exists"]
    return {
        "images": len(per_image),
        "turns": len(types),
        "mean_turns": float(np.mean(per_image)),
        "type_shares": {kind: types.count(kind) / len(types) for kind in QUESTIONS},
        "distinct_questions": len(set(questions)),
        "distinct_answers": len(set(answers)),
        "mean_answer_words": float(np.mean(short)),
        "max_answer_words": int(max(short)),
        "yes_share": exists.count("yes") / max(len(exists), 1),
    }


__all__ = [
    "conversation_statistics",
    "FEATURES",
    "QUESTIONS",
    "TEMPLATES",
    "conversation",
    "list_phrase",
    "load_scenes_conversations",
    "relation_phrase",
]
