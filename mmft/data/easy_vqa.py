"""easy-VQA (the `easy-vqa` PyPI package) as a `datasets.DatasetDict`: offline, cached by `datasets`."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

FEATURES = Features(
    {
        "image": Image(),
        "question": Value("string"),
        "answers": Sequence(Value("string")),
        "question_type": Value("string"),
    }
)
_COLOURS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}


def question_type(answer: str) -> str:
    """easy-VQA's three kinds of question, told apart by their answer."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "color" if answer in _COLOURS else "shape"


def package_dir() -> str:
    """Where the installed easy-vqa package lives. Loaders pass it to `Dataset.from_generator` as an (unused)
    argument: the cached table holds the images' paths, so an install elsewhere (another venv) must not reuse it."""
    import easy_vqa

    return str(Path(easy_vqa.__file__).resolve().parent)


def _rows(split: str, installed_at: str):
    """One row per question; `installed_at` only keys the cache (`package_dir()`)."""
    import easy_vqa

    questions = easy_vqa.get_train_questions if split == "train" else easy_vqa.get_test_questions
    images = easy_vqa.get_train_image_paths if split == "train" else easy_vqa.get_test_image_paths
    paths = images()
    for text, answer, image_id in zip(*questions()):
        yield {"image": paths[image_id], "question": text, "answers": [answer], "question_type": question_type(answer)}


def load_easy_vqa() -> DatasetDict:
    """train (38,575 questions on 4,000 images) and test (9,673 on 1,000): 64x64 PNGs, 13 answers."""
    try:
        import easy_vqa  # noqa: F401
    except ImportError as error:
        raise ImportError("the easy_vqa dataset needs the package: pip install easy-vqa") from error
    # from_generator caches the Arrow table under the datasets cache, keyed by the generator and its arguments.
    location = package_dir()
    return DatasetDict(
        {
            split: Dataset.from_generator(
                _rows, gen_kwargs={"split": split, "installed_at": location}, features=FEATURES
            )
            for split in ("train", "test")
        }
    )
