"""`mmft demo` in a real browser: each task's page is served on a free 127.0.0.1 port, opened in headless Chromium
(Playwright driving the system's /usr/bin/chromium), given an image and a text, and what the page shows must equal
what the task's pipeline (or `mmft search`) says for the same input. The VQA model is trained by the recipe and pushed
to a fake Hub with `--push_demo`, and its page is the one the pushed app.py builds.

`MMFT_DEMO_SCREENSHOTS=docs/demo` saves each task's page as docs/demo/<task>.png.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import IMAGE_SIZE, TINY_TIMM_CNN, tiny_model
from helpers_captioning import (
    scenes_rows,
    tiny_caption_model,
    tiny_caption_processor,
    tiny_generative_model,
    tiny_generative_processor,
)
from helpers_contract import tiny
from helpers_data import make_imagefolder
from helpers_hub import fake_hub
from helpers_launch import REPO, free_port, run_in_process
from test_retrieval import tiny_retrieval
from transformers import pipeline

import mmft
from mmft.arguments import parse_recipe_args
from mmft.cli import main
from mmft.demo import serve
from mmft.processing_mmft import MMFTProcessor

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]  # fmt: skip  (headless=True adds --headless)
SCREENSHOTS = os.environ.get("MMFT_DEMO_SCREENSHOTS")  # a folder: each task's page is saved there as <task>.png
QUESTION = "what color is the shape?"
WAIT_MS = 60_000  # for an answer to show up: the pipeline runs on a shared CPU


# -- fixtures: the browser, the models, the inputs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the whole file, with a fresh profile; missing Chromium fails (.ci/run installs it)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 860},
        )
        context.set_default_timeout(WAIT_MS)
        yield context
        context.close()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """Six scenes pictures in a folder (the retrieval gallery, and every page's input image) and their captions."""
    folder = tmp_path_factory.mktemp("scenes")
    images, captions = scenes_rows(6)
    for index, image in enumerate(images):
        image.save(folder / f"scene{index}.png")
    return {"folder": folder, "image": folder / "scene2.png", "captions": [c[0] for c in captions]}


def _save(folder: Path, model, processor=None) -> Path:
    model.save_pretrained(folder)
    (
        processor or MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN)
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_text_dir, one_cpu_thread) -> Path:
    """The VQA recipe trained on tiny towers and pushed with --push_to_hub --push_demo: the repo on the fake Hub."""
    root = tmp_path_factory.mktemp("vqa")
    data = make_imagefolder(root / "data", n_train=16, n_test=6)
    with fake_hub(root / "hub") as hub:
        run_in_process(
            root / "out",
            tiny_text_dir,
            data,
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "4",
            "--save_strategy",
            "no",
            "--push_to_hub",
            "--hub_model_id",
            "me/vqa-demo",
            "--push_demo",
        )
    assert hub.commits == ["End of training"]
    return hub.root / "me" / "vqa-demo"


# -- driving a page -------------------------------------------------------------------------------------------------
@contextmanager
def opened(browser, demo, port: int):
    """A browser tab on the running page `demo` (closed with the page)."""
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        yield page
    finally:
        page.close()
        if demo is not None:
            demo.close()


@contextmanager
def served(browser, folder: Path):
    """The `mmft demo` page of `folder` on a free 127.0.0.1 port, open in a browser tab."""
    port = free_port()
    with opened(browser, serve(str(folder), port=port, block=False), port) as page:
        yield page


def upload(page, elem_id: str, path: Path) -> None:
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.locator(f"#{elem_id} img").first.wait_for()  # the upload is done when its preview shows


def fill(page, elem_id: str, text: str) -> None:
    """Type into a textbox, or set a slider by its number box."""
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input[type=number]").first
    box.fill(text)
    box.blur()


def scored_labels(page, elem_id: str, count: int) -> list[tuple[str, float]]:
    """(label, score) pairs of a `gr.Label`, in the order shown, once `count` of them show."""
    meters = page.locator(f"#{elem_id} meter")
    page.wait_for_function(f"document.querySelectorAll('#{elem_id} meter').length === {count}")
    return [(meter.get_attribute("aria-label"), float(meter.get_attribute("value"))) for meter in meters.all()]


def table(page, elem_id: str, count: int) -> list[list[str]]:
    """The cells of a `gr.Dataframe`'s rows, once `count` rows show."""
    rows = f"#{elem_id} [role=row]:has([role=gridcell])"
    page.wait_for_function(f"document.querySelectorAll('{rows}').length === {count}")
    return page.eval_on_selector_all(
        rows,
        "rows => rows.map(row => Array.from(row.querySelectorAll("
        "'[role=gridcell]')).map(cell => cell.innerText.trim()))",
    )


def screenshot(page, task: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{task}.png"), full_page=True)


def _hit_rows(hits, item) -> list[list[str]]:
    return [
        [str(rank), f"{hit.score:.4f}", f"{hit.match:.4f}", f"{hit.similarity:.4f}", item(hit.item)]
        for rank, hit in enumerate(hits, start=1)
    ]


# -- one page per task ----------------------------------------------------------------------------------------------
def test_vqa_page_from_the_pushed_app_shows_the_pipelines_answers_and_the_heat_map(browser, pushed, scenes):
    assert {"app.py", "requirements.txt", "model.safetensors", "config.json", "README.md"} <= {
        p.name for p in pushed.iterdir()
    }
    assert (pushed / "requirements.txt").read_text() == f"mmft[demo]=={mmft.__version__}\n"
    demo = runpy.run_path(str(pushed / "app.py"))["demo"]  # what a Space runs, but for its launch line
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    shown_by_default = min(5, len(json.loads((pushed / "config.json").read_text())["id2label"]))  # the slider's
    expected = pipeline("mmft-vqa", model=str(pushed))(
        image=str(scenes["image"]), question=QUESTION, top_k=shown_by_default
    )
    with opened(browser, demo, port) as page:
        upload(page, "image", scenes["image"])
        fill(page, "text", QUESTION)
        page.locator("#submit").click()
        shown = scored_labels(page, "answers", len(expected))
        page.locator("#heatmap img").wait_for()
        screenshot(page, "vqa")
    assert [label for label, _ in shown] == [r["answer"] for r in expected]
    assert [score for _, score in shown] == pytest.approx([r["score"] for r in expected], rel=1e-6)


def test_the_pushed_app_loads_the_hub_repo_when_copied_into_a_space_of_its_own(pushed, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(mmft.demo, "build_demo", built.append)
    (tmp_path / "app.py").write_text((pushed / "app.py").read_text())
    runpy.run_path(str(tmp_path / "app.py"))
    runpy.run_path(str(pushed / "app.py"))
    assert built == ["me/vqa-demo", str(pushed.resolve())]


def test_classification_page_shows_the_pipelines_label_probabilities(browser, scenes, tmp_path):
    folder = _save(tmp_path / "entailment", tiny(mmft.MMFTForImageTextClassification, "timm_cnn"))
    text = "there is a red circle"
    expected = pipeline("mmft-image-text-classification", model=str(folder))(image=str(scenes["image"]), text=text)
    with served(browser, folder) as page:
        upload(page, "image", scenes["image"])
        fill(page, "text", text)
        page.locator("#submit").click()
        shown = scored_labels(page, "labels", len(expected))
        screenshot(page, "classification")
    assert [label for label, _ in shown] == [r["label"] for r in expected]
    assert [score for _, score in shown] == pytest.approx([r["score"] for r in expected], rel=1e-6)


def test_retrieval_page_ranks_a_folder_for_a_text_and_captions_for_an_image_as_mmft_search(browser, scenes, tmp_path):
    from mmft.loading import load_model
    from mmft.tasks.retrieval.search import Searcher, search_captions, search_images

    folder = _save(tmp_path / "scenes_retrieval", tiny_retrieval())
    query, captions = "a big red circle on the right", scenes["captions"]
    searcher = Searcher(*load_model(str(folder))[:2], str(folder))
    gallery = tmp_path / "gallery"  # a copy: `mmft search` caches embeddings inside the folder
    gallery.mkdir()
    for picture in scenes["folder"].iterdir():
        (gallery / picture.name).write_bytes(picture.read_bytes())
    images = _hit_rows(search_images(searcher, str(gallery), query, 5, 16)[0], lambda item: Path(item).name)
    (tmp_path / "captions.txt").write_text("\n".join(captions))
    texts = _hit_rows(search_captions(searcher, str(scenes["image"]), str(tmp_path / "captions.txt"), 3, 16)[0], str)
    with served(browser, folder) as page:
        page.locator("#gallery input[type=file]").set_input_files(str(scenes["folder"]))  # the folder, as picked
        fill(page, "query", query)
        page.locator("#search_images").click()
        shown_images = table(page, "image_hits", 5)
        gallery_captions = page.locator("#ranked_images img").evaluate_all("images => images.map(i => i.alt)")
        screenshot(page, "retrieval")
        page.get_by_role("tab", name="image → captions").click()
        upload(page, "image", scenes["image"])
        fill(page, "captions", "\n".join(captions))
        fill(page, "caption_top_k", "3")
        page.locator("#search_captions").click()
        shown_texts = table(page, "caption_hits", 3)
    assert shown_images == images
    assert gallery_captions == [f"{rank}. {name}" for rank, *_, name in images]
    assert shown_texts == texts


def test_captioning_page_through_the_mmft_demo_command_writes_the_pipelines_captions(browser, scenes, tmp_path):
    folder = _save(tmp_path / "scenes_captioning", tiny_caption_model(), tiny_caption_processor())
    caption = pipeline("mmft-image-to-text", model=str(folder))
    greedy = caption(str(scenes["image"]), max_new_tokens=32)[0]["generated_text"]
    beam = caption(str(scenes["image"]), max_new_tokens=12, num_beams=3)[0]["generated_text"]
    assert greedy and beam and greedy != beam  # so the page's second answer is told from its first
    port = free_port()
    command = [sys.executable, "-m", "mmft.cli", "demo", str(folder), "--port", str(port), "--device", "cpu"]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_until_served(server, f"http://127.0.0.1:{port}/")
        with opened(browser, None, port) as page:
            upload(page, "image", scenes["image"])
            page.locator("#submit").click()
            page.wait_for_function(f"document.querySelector('#caption textarea').value === {json.dumps(greedy)}")
            page.get_by_role("radio", name="beam search").check()
            fill(page, "max_new_tokens", "12")
            page.locator("#submit").click()
            page.wait_for_function(f"document.querySelector('#caption textarea').value === {json.dumps(beam)}")
            screenshot(page, "captioning")
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in output and "gradio.live" not in output


def test_generative_vqa_page_writes_the_pipelines_answer_to_the_question(browser, scenes, tmp_path):
    folder = _save(tmp_path / "generative_vqa", tiny_generative_model(), tiny_generative_processor())
    question = "what color is the shape?"
    answer = pipeline("mmft-image-text-to-text", model=str(folder))
    expected = answer(str(scenes["image"]), text=question, max_new_tokens=16)[0]["generated_text"]
    assert expected  # a random tiny decoder still writes something, so an empty box is told from the answer
    with served(browser, folder) as page:
        upload(page, "image", scenes["image"])
        assert page.locator("#answer textarea").input_value() == ""
        fill(page, "text", question)
        page.locator("#submit").click()
        page.wait_for_function(f"document.querySelector('#answer textarea').value === {json.dumps(expected)}")
        screenshot(page, "generative_vqa")


def _wait_until_served(server: subprocess.Popen, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mmft demo exited with {server.returncode}: {server.communicate()[0][-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mmft demo did not serve {url} within {timeout:.0f} s")


# -- the command's answers without a page ---------------------------------------------------------------------------
def test_demo_serves_this_machine_only_unless_asked_and_loads_the_model_once(tmp_path, monkeypatch):
    import gradio

    folder = _save(tmp_path / "model", tiny(mmft.MMFTForImageTextClassification, "timm_cnn"))
    launches, loads = [], []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launches.append(kwargs))
    load = mmft.MMFTForImageTextClassification.from_pretrained.__func__
    monkeypatch.setattr(
        mmft.MMFTForImageTextClassification,
        "from_pretrained",
        classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k)),
    )
    assert main(["demo", str(folder)]) == 0
    assert main(["demo", str(folder), "--server_name", "0.0.0.0", "--port", "8123", "--share"]) == 0
    assert [(k["server_name"], k["server_port"], k["share"]) for k in launches] == [
        ("127.0.0.1", None, False),
        ("0.0.0.0", 8123, True),
    ]
    assert len(loads) == 2  # once per page


def _refusal(capsys, *argv: str) -> str:
    """What `mmft demo ARGV` prints when it refuses (status 2): one line, no traceback."""
    capsys.readouterr()
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_demo_refuses_what_is_not_an_mmft_model_in_one_sentence(tmp_path, tiny_text_dir, capsys):
    assert "it has no config.json" in _refusal(capsys, str(tmp_path))
    assert "there is no such folder" in _refusal(capsys, str(tmp_path / "missing"))
    assert "model_type 'bert'" in _refusal(capsys, str(tiny_text_dir))


def test_demo_without_gradio_or_for_a_task_without_a_page_says_so(tmp_path, monkeypatch, capsys):
    import importlib.util

    folder = _save(tmp_path / "model", tiny(mmft.MMFTForImageTextClassification, "timm_cnn"))
    with monkeypatch.context() as patched:
        patched.setattr(mmft.TASKS["classification"], "demo", None)  # a task that declares no page
        refusal = _refusal(capsys, str(folder))
        # ... nor is an app.py written for it, which could only refuse in its Space; nor pushed by a recipe
        assert "that task has no demo" in _refusal(capsys, str(folder), "--write_space")
        assert not (folder / "app.py").exists()
        with pytest.raises(ValueError, match="--push_demo: the classification task has no demo page"):
            parse_recipe_args(["--push_to_hub", "--push_demo", "--output_dir", str(tmp_path)], "classification")
    assert "'classification' model, and that task has no demo" in refusal
    others = sorted(name for name in mmft.TASKS if name != "classification" and mmft.TASKS[name].demo)
    assert {"captioning", "retrieval", "vqa"} <= set(others) and f"there are demos for {', '.join(others)})" in refusal
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert 'pip install "mmft[demo]"' in _refusal(capsys, str(folder))


def test_each_task_declares_its_page_which_only_mmft_demo_imports():
    """A task's page is the function its `Task.demo` names, in its own package; neither `import mmft`, nor reading
    every task from the registry, nor building the `mmft` command imports it or Gradio."""
    code = (
        "import sys, mmft\n"
        "from mmft.cli import build_parser\n"
        "build_parser()\n"
        "demos = {name: mmft.TASKS[name].demo for name in mmft.TASKS}\n"
        "assert demos == {name: f'mmft.tasks.{name}.demo:{name}_page' for name in demos}, demos\n"
        "loaded = [m for m in sys.modules if m == 'gradio' or m.startswith('gradio.') or m.endswith('.demo.widgets')"
        " or (m.startswith('mmft.tasks.') and m.endswith('.demo'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_write_space_and_push_demo_flags(tmp_path, capsys):
    folder = _save(tmp_path / "model", tiny(mmft.MMFTForImageTextClassification, "timm_cnn"))
    assert main(["demo", str(folder), "--write_space"]) == 0
    app = (folder / "app.py").read_text()
    assert "MODEL = str(HERE)\n" in app and (folder / "requirements.txt").is_file()
    with pytest.raises(ValueError, match="--push_demo .* needs --push_to_hub"):
        parse_recipe_args(["--output_dir", str(tmp_path / "out"), "--push_demo"])


def test_the_vqa_heat_map_is_mmft_explains_and_a_bridge_without_attention_gets_a_note(scenes, tmp_path):
    from types import SimpleNamespace

    from mmft.tasks.vqa.demo import _explanation

    processor = MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN)
    for bridge in ("co_attention", "concat"):
        loaded = SimpleNamespace(model=tiny_model(bridge, "timm_cnn").eval(), processor=processor, workdir=tmp_path)
        heat, note = _explanation(loaded, str(scenes["image"]), QUESTION)
        if bridge == "co_attention":
            assert note == "" and Path(heat).suffix == ".png" and Path(heat).stat().st_size > 0
        else:
            assert heat is None and "bridge 'concat' has no cross-attention" in note
