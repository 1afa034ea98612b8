"""Which preset a recipe run starts from (issue 28, item 1): a demo preset only on its demo dataset, the task's
defaults for real data on any other, `run_config.yaml` recording the effective flags and replaying them, and a clear
error where a default Hub tower cannot be fetched (this machine is offline)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from helpers_data import make_imagefolder
from helpers_launch import REPO, tiny_tower_flags

from mmft.arguments import parse_recipe_args
from mmft.presets import RUN_CONFIG, load_preset
from mmft.tasks import TASKS, get_task
from mmft.tasks.defaults import REAL_DATA_DEFAULTS, dataset_slug
from mmft.training import main, record_flags

RECIPES = ("vqa", "classification", "retrieval", "captioning")


def _default_preset(task: str) -> str:
    """The `DEFAULT_PRESET` that recipes/<task>.py passes to `mmft.training.main`."""
    spec = importlib.util.spec_from_file_location(f"recipe_{task}", REPO / "recipes" / f"{task}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the recipe runs `main` only under __main__
    assert module.TASK == task
    return str(module.DEFAULT_PRESET)


def _fields(args) -> dict:
    """Every field of every argument group, by group and name (TrainingArguments compares as a dataclass)."""
    return {
        (type(group).__name__, field.name): getattr(group, field.name)
        for group in args[:6]
        for field in dataclasses.fields(group)
    }


def _written(args, output_dir: Path) -> dict:
    """The run_config.yaml that the run of `args` writes (what `mmft.training.run` writes first) into `output_dir`."""
    args.training.output_dir = str(output_dir)
    record_flags(args)
    return yaml.safe_load((output_dir / RUN_CONFIG).read_text())


@pytest.mark.parametrize("task", RECIPES)
def test_a_run_with_no_dataset_keeps_its_demo_preset(task):
    """`make train` (recipes/vqa.py without flags) and its siblings parse exactly what their demo preset gives, as
    before: the same arguments as naming the preset with --config (the path every run took before this change)."""
    preset = _default_preset(task)
    plain = parse_recipe_args([], task, default_config=preset)
    assert _fields(plain) == _fields(parse_recipe_args(["--config", preset], task))
    demo = load_preset(preset)["dataset"]
    assert _fields(parse_recipe_args(["--dataset", demo], task, default_config=preset)) == _fields(plain)
    assert plain.flags.source == f"preset {preset} (the {demo} demo)"
    assert plain.training.output_dir == load_preset(preset)["output_dir"]


@pytest.mark.parametrize("task", RECIPES)
def test_no_demo_preset_key_reaches_a_run_on_other_data(task, tmp_path):
    """On a user's folder the recipe starts from the task's defaults for real data: no key whose value only the demo
    preset gives is in the run's run_config.yaml (read back), nor in its parsed arguments. Negative control: the same
    run naming the demo preset with --config has them."""
    preset = _default_preset(task)
    demo = load_preset(preset)
    data = tmp_path / "my_photos"
    data.mkdir()
    argv = ["--dataset", str(data)]
    written = _written(parse_recipe_args(argv, task, default_config=preset), tmp_path / "run")
    defaults = get_task(task).real_data_defaults(str(data))
    plain = _fields(parse_recipe_args(argv, task))  # the flags' own defaults, with no preset at all
    by_name = {name: value for (_, name), value in plain.items()}

    def leaked(run: dict) -> dict:
        """The demo's keys that `run` has with the demo's value where neither the task's defaults for real data nor
        the flags' own defaults would give it."""
        return {
            key: value
            for key, value in demo.items()
            if key != "dataset" and run.get(key) == value and defaults.get(key, by_name.get(key)) != value
        }

    assert leaked(written) == {}
    assert written["output_dir"] == f"outputs/my_photos-{task}" and written["dataset"] == str(data)
    assert written["eval_strategy"] == written["save_strategy"] == "epoch"
    assert "max_steps" not in written and "max_eval_samples" not in written and "hidden_size" not in written
    assert written["vision_model"] == REAL_DATA_DEFAULTS["vision_model"]  # pretrained, never timm:<arch> (scratch)
    assert "vision_model_args" not in written and "image_size" not in written  # the demo's CNN stem keys
    parsed = parse_recipe_args(["--config", str(tmp_path / "run" / RUN_CONFIG)], task, default_config=preset)
    assert parsed.training.max_steps == -1 and parsed.model.hidden_size == 256 and parsed.data.max_eval_samples is None
    if task == "captioning":  # the README's coco_json command inherited 150 steps, no checkpoints, scenes' folder
        assert parsed.task.decoder_model == "HuggingFaceTB/SmolLM2-135M-Instruct"

    control = _written(parse_recipe_args(["--config", preset, *argv], task, default_config=preset), tmp_path / "ctl")
    assert {key: control[key] for key in demo if key != "dataset"} == {k: v for k, v in demo.items() if k != "dataset"}
    assert {"output_dir", "vision_model", "image_size", "eval_strategy"} <= set(leaked(control))


@pytest.mark.parametrize("none", ["", "none"])
def test_config_none_starts_from_the_tasks_defaults_for_real_data(none):
    for task in TASKS:
        args = parse_recipe_args(["--config", none], task, default_config=_default_preset("vqa"))
        dataset = get_task(task).default_dataset  # no --dataset: the task's own
        assert args.flags.flags == get_task(task).real_data_defaults(None)
        assert args.training.output_dir == f"outputs/{dataset}-{task}"
        assert args.model.vision_model == REAL_DATA_DEFAULTS["vision_model"] and args.training.max_steps == -1
        assert args.training.eval_strategy == "epoch" and args.training.save_total_limit == 2
        assert args.flags.source.startswith(f"no preset (--config {none!r}): the {task} task's defaults for real data")


@pytest.mark.parametrize(
    "task, argv",
    [
        ("vqa", []),  # the demo preset
        ("vqa", ["--vision_model", "timm:vit_tiny_patch16_224", "--lora_vision", "lora"]),  # its CNN stem keys dropped
        (
            "captioning",
            ["--dataset", "my/captions", "--no_throughput", "--bf16", "--num_train_epoch", "2"],  # an abbreviation
        ),
        ("retrieval", ["--config", "", "--text_model_args", '{"hidden_dropout_prob": 0.0}', "--report_to=none"]),
        ("classification", ["--config", str(REPO / "recipes" / "configs" / "easy_vqa_lora.yaml"), "--seed", "7"]),
    ],
)
def test_run_config_replays_the_same_arguments(task, argv, tmp_path):
    """parse -> run_config.yaml -> --config run_config.yaml parses the same value into every field of every group."""
    preset = _default_preset(task)
    args = parse_recipe_args(argv, task, default_config=preset)
    path = args.flags.write(tmp_path)
    assert path == tmp_path / RUN_CONFIG and not list(tmp_path.glob(".*"))  # written whole (mmft.atomic)
    replayed = parse_recipe_args(["--config", str(path)], task, default_config=preset)
    assert _fields(replayed) == _fields(args)
    assert replayed.flags.source == f"preset {path} (named by --config)"
    assert yaml.safe_load(path.read_text()) == yaml.safe_load(replayed.flags.yaml().split("\n", 2)[2])


def test_the_output_dir_is_named_after_the_dataset(tmp_path):
    folder, table = tmp_path / "My Photos", tmp_path / "rows.jsonl"
    folder.mkdir()
    table.write_text("")
    assert dataset_slug(str(folder) + "/") == "My_Photos"
    assert dataset_slug(str(table)) == "rows"
    assert dataset_slug("nlphuji/flickr30k") == "nlphuji_flickr30k"
    assert get_task("retrieval").output_dir_for("nlphuji/flickr30k") == "outputs/nlphuji_flickr30k-retrieval"


def test_an_offline_default_tower_is_one_clear_error(tmp_path, monkeypatch, capsys, caplog, tiny_text_dir):
    """recipes/vqa.py on a user's folder, offline: the default ViT cannot be fetched, so the run stops with exit 2 and
    one line naming the offline choices (no traceback, no network retries); the preset line and run_config.yaml come
    first. With the offline choices given, the same command trains."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MMFT_CPU_THREADS", "1")
    data = make_imagefolder(tmp_path / "data", n_train=8, n_test=4)
    output = tmp_path / "out"
    argv = ["--dataset", str(data), "--output_dir", str(output), "--text_model", str(tiny_text_dir)]
    assert main("vqa", argv, _default_preset("vqa")) == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("mmft: unknown")]
    assert len(lines) == 1 and "Traceback" not in error
    assert "'google/vit-base-patch16-224-in21k'" in lines[0]
    assert "--vision_model efficientnet_lite0" in lines[0] and "--vision_model timm:<architecture>" in lines[0]
    assert "mmft: no preset (--dataset" in caplog.text and "the vqa task's defaults for real data" in caplog.text
    assert yaml.safe_load((output / RUN_CONFIG).read_text())["vision_model"] == REAL_DATA_DEFAULTS["vision_model"]

    tiny = [*tiny_tower_flags(tiny_text_dir), "--num_train_epochs", "1", "--per_device_train_batch_size", "4"]
    argv = ["--dataset", str(data), "--output_dir", str(output), *tiny, "--disable_tqdm", "true"]
    assert main("vqa", argv, _default_preset("vqa")) == 0
    written = yaml.safe_load((output / RUN_CONFIG).read_text())
    assert written["eval_strategy"] == "epoch" and written["hidden_size"] == 32
    assert (output / "checkpoint-2").is_dir() and (output / "test_results.json").is_file()  # a checkpoint per epoch


def test_offline_default_text_tower_and_decoder_name_their_offline_aliases(monkeypatch):
    from mmft.towers import TowerUnavailable, decoder_config_from_name, text_config_from_name

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TowerUnavailable, match="--text_model minilm or --text_model <a local folder>"):
        text_config_from_name(REAL_DATA_DEFAULTS["text_model"])
    with pytest.raises(TowerUnavailable, match="--decoder_model smollm2"):
        decoder_config_from_name(get_task("captioning").real_data_flags["decoder_model"])


def test_turning_off_evaluation_or_checkpoints_turns_off_the_defaults_model_selection(tmp_path, caplog):
    """The real-data defaults select the best epoch; `--save_strategy no` (or `--eval_strategy no`) from the user
    drops that default (said in the log) instead of ending in transformers' "strategies must match" error."""
    folder = str(tmp_path / "my_data")
    args = parse_recipe_args(["--dataset", folder], "vqa", default_config=_default_preset("vqa"))
    assert args.training.load_best_model_at_end  # the default, for the negative control below
    with caplog.at_level("WARNING", logger="mmft"):
        args = parse_recipe_args(
            ["--dataset", folder, "--save_strategy", "no"], "vqa", default_config=_default_preset("vqa")
        )
    assert (
        not args.training.load_best_model_at_end and "--save_strategy no on the command line turns off" in caplog.text
    )
    assert "load_best_model_at_end" not in args.flags.flags
    args = parse_recipe_args(
        ["--dataset", folder, "--eval_strategy", "no"], "vqa", default_config=_default_preset("vqa")
    )
    assert not args.training.load_best_model_at_end
    # Given explicitly, the user's own contradiction is theirs to see: transformers' own error, at parse time.
    with pytest.raises(ValueError, match="strategy"):
        parse_recipe_args(
            ["--dataset", folder, "--save_strategy", "no", "--load_best_model_at_end", "true"],
            "vqa",
            default_config=_default_preset("vqa"),
        )
