"""Visual entailment derived from easy-VQA: statements about each image, labelled true or false (offline default).

Every easy-VQA question becomes one statement about the same image. A yes/no question becomes its declarative form,
true when the answer was "yes" ("is there not a red shape?" / no -> "there is not a red shape": false). An open
question becomes a statement with either its answer (true) or another colour or shape (false), one of the two at
random: "what color is the circle?" / blue -> "the circle is blue" (true) or "the circle is teal" (false). Every draw
comes from a generator seeded by split and row, so the dataset is the same on every machine. Each split is then
balanced by dropping the surplus of the larger class (again seeded). Derived from easy-VQA; not a standard benchmark.
"""

from __future__ import annotations

import re

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from ...data.easy_vqa import _COLOURS, package_dir

SHAPES = ("circle", "rectangle", "triangle")
COLOURS = tuple(sorted(_COLOURS))
FEATURES = Features(
    {"image": Image(), "text": Value("string"), "labels": Sequence(Value("string")), "statement_type": Value("string")}
)

# (question pattern, statement template); {0} is the pattern's group, {answer} the (true or false) answer.
YES_NO = (
    (r"does the image contain a (.+)\?", "the image contains a {0}"),
    (r"does the image not contain a (.+)\?", "the image does not contain a {0}"),
    (r"is a (.+) present\?", "a {0} is present"),
    (r"is no (.+) present\?", "no {0} is present"),
    (r"is there a (.+)\?", "there is a {0}"),
    (r"is there not a (.+)\?", "there is not a {0}"),
)
OPEN = (
    (r"what colou?r is the (.+)\?", "the {0} is {answer}"),
    (r"what is the colou?r of the (.+)\?", "the color of the {0} is {answer}"),
    (r"what is the (\w+) shape\?", "the {0} shape is a {answer}"),
    (r"what shape does the image contain\?", "the image contains a {answer}"),
    (r"what shape is in the image\?", "a {answer} is in the image"),
    (r"what shape is present\?", "a {answer} is present"),
)


def statement(question: str, answer: str, rng: np.random.Generator) -> tuple[str, str]:
    """(statement, "true"/"false") for one easy-VQA question and its answer."""
    for pattern, template in YES_NO:
        if match := re.fullmatch(pattern, question):
            return template.format(match.group(1)), "true" if answer == "yes" else "false"
    for pattern, template in OPEN:
        if match := re.fullmatch(pattern, question):
            groups = match.groups() or ("",)
            if rng.random() < 0.5:
                return template.format(*groups, answer=answer), "true"
            pool = SHAPES if answer in SHAPES else COLOURS
            wrong = str(rng.choice([option for option in pool if option != answer]))
            return template.format(*groups, answer=wrong), "false"
    raise ValueError(f"easy-VQA question {question!r} matches no statement template")


def _rows(split: str, seed: int = 0, installed_at: str = ""):
    import easy_vqa

    train = split == "train"
    questions, answers, image_ids = (easy_vqa.get_train_questions if train else easy_vqa.get_test_questions)()
    paths = (easy_vqa.get_train_image_paths if train else easy_vqa.get_test_image_paths)()
    rows = []
    for index, (question, answer, image_id) in enumerate(zip(questions, answers, image_ids)):
        rng = np.random.default_rng([seed, int(train), index])
        kind = "yes/no" if answer in ("yes", "no") else "open"
        rows.append((paths[image_id], *statement(question, answer, rng), kind))
    # Balance: keep an equal number of true and false statements, chosen by a seeded draw, in their original order.
    by_label = {label: [i for i, row in enumerate(rows) if row[2] == label] for label in ("true", "false")}
    keep = min(len(positions) for positions in by_label.values())
    rng = np.random.default_rng([seed, int(train), 1 << 20])
    kept = sorted(
        p for positions in by_label.values() for p in rng.choice(positions, size=keep, replace=False).tolist()
    )
    for image, text, label, kind in (rows[i] for i in kept):
        yield {"image": image, "text": text, "labels": [label], "statement_type": kind}


def load_easy_vqa_entailment(seed: int = 0) -> DatasetDict:
    """train and test statements (true/false, balanced) on easy-VQA's 4,000 / 1,000 images."""
    try:
        import easy_vqa  # noqa: F401
    except ImportError as error:
        raise ImportError("the easy_vqa_entailment dataset needs the package: pip install easy-vqa") from error
    location = package_dir()  # keys the cache: its table holds the images' paths
    return DatasetDict(
        {
            split: Dataset.from_generator(
                _rows, gen_kwargs={"split": split, "seed": seed, "installed_at": location}, features=FEATURES
            )
            for split in ("train", "test")
        }
    )


__all__ = ["load_easy_vqa_entailment", "statement"]
