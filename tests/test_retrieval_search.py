"""`mmft search` on a tiny saved retrieval model: rankings equal the model's own, and the embedding cache is reused,
invalidated per changed file, and pruned of removed ones."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGE_SIZE, TINY_TIMM_CNN
from PIL import Image
from test_retrieval import tiny_retrieval

from mmft import AutoModelForImageTextRetrieval, MMFTProcessor
from mmft.cli import main
from mmft.tasks.retrieval.search import CACHE_DIR, EmbeddingCache, Searcher, nearest

COLOURS = ("red", "blue", "green", "yellow", "black", "purple")
QUERY = "a red square at the top left"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    model_dir, images = root / "model", root / "images"
    tiny_retrieval().save_pretrained(model_dir)
    MMFTProcessor.from_vision_text_pretrained("timm:resnet10t", "minilm", IMAGE_SIZE, TINY_TIMM_CNN).save_pretrained(
        model_dir
    )
    (images / "nested").mkdir(parents=True)
    for index, colour in enumerate(COLOURS):
        picture = Image.new("RGB", (40, 40), "white")
        picture.paste(Image.new("RGB", (12, 12), colour), (4 * index, 20 - 3 * index))
        picture.save(images / ("nested" if index == 5 else "") / f"{colour}.png")
    (images / "notes.txt").write_text("not an image")
    captions = root / "captions.txt"
    captions.write_text("\n".join(f"a {colour} square" for colour in COLOURS) + "\n\n")
    return {"model": model_dir, "images": images, "captions": captions, "root": root}


def _printed(output: str) -> list[tuple[str, ...]]:
    """(rank, score, match, similarity, item) of each printed hit."""
    lines = output.strip().splitlines()
    assert lines[0] == "rank\tscore\tmatch\tsimilarity\titem"
    return [tuple(line.split("\t")) for line in lines[1:]]


def _expected(model_dir, images: list, texts: list[str], rerank_k: int, top_k: int, text_query: bool):
    """The ranking computed directly: cosine similarity over everything, then the top rerank_k by the log-odds of a
    match plus the scaled similarity; (index, P(match), similarity, score) of the best top_k."""
    model = AutoModelForImageTextRetrieval.from_pretrained(model_dir).eval()
    processor = MMFTProcessor.from_pretrained(model_dir)
    pictures = [Image.open(path).convert("RGB") for path in images]
    with torch.no_grad():
        image_features = model.get_image_features(processor(images=pictures)["pixel_values"])
        image_embeds = F.normalize(image_features.pooler_output, dim=-1)
        tokens = processor(text=texts)
        text_features = model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
        text_embeds = F.normalize(text_features.pooler_output, dim=-1)
        similarity = (text_embeds @ image_embeds.T)[0] if text_query else (image_embeds @ text_embeds.T)[0]
        top = similarity.topk(rerank_k).indices.tolist()
        probabilities, scores = [], []
        scale = float(model.contrastive.logit_scale())
        for index in top:
            picture, text = (pictures[index], texts[0]) if text_query else (pictures[0], texts[index])
            inputs = processor(images=picture, text=text)
            logits = model.match(**inputs)[0]
            probabilities.append(float(logits.softmax(-1)[1]))
            scores.append(float(logits[1] - logits[0]) + scale * float(similarity[index]))  # match + similarity
    order = sorted(range(rerank_k), key=lambda i: -scores[i])[:top_k]
    return [(top[i], probabilities[i], float(similarity[top[i]]), scores[i]) for i in order]


def test_text_to_image_search_ranks_like_the_model(saved, capsys):
    folder = saved["root"] / "text_to_image"
    shutil.copytree(saved["images"], folder, ignore=shutil.ignore_patterns(CACHE_DIR))
    assert (
        main(
            [
                "search",
                "--model",
                str(saved["model"]),
                "--images",
                str(folder),
                "--query",
                QUERY,
                "--top_k",
                "3",
                "--rerank_k",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    hits = _printed(capsys.readouterr().out)
    files = sorted(p for p in folder.rglob("*.png") if CACHE_DIR not in p.parts)
    assert len(files) == 6  # the nested image is found, the text file is not an image
    expected = _expected(saved["model"], files, [QUERY], rerank_k=4, top_k=3, text_query=True)
    assert [h[4] for h in hits] == [str(files[i]) for i, *_ in expected]
    for hit, (_, probability, similarity, score) in zip(hits, expected):
        assert float(hit[1]) == pytest.approx(score, abs=1e-3)
        assert float(hit[2]) == pytest.approx(probability, abs=1e-4)
        assert float(hit[3]) == pytest.approx(similarity, abs=1e-4)


def test_image_to_text_search_ranks_like_the_model(saved, capsys):
    image = saved["images"] / "red.png"
    assert (
        main(
            [
                "search",
                "--model",
                str(saved["model"]),
                "--image",
                str(image),
                "--captions",
                str(saved["captions"]),
                "--top_k",
                "2",
                "--rerank_k",
                "5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    hits = _printed(capsys.readouterr().out)
    texts = [f"a {colour} square" for colour in COLOURS]
    expected = _expected(saved["model"], [image], texts, rerank_k=5, top_k=2, text_query=False)
    assert [h[4] for h in hits] == [texts[i] for i, *_ in expected]
    assert float(hits[0][1]) == pytest.approx(expected[0][3], abs=1e-3)
    assert float(hits[0][2]) == pytest.approx(expected[0][1], abs=1e-4)


def test_without_reranking_the_order_is_by_similarity(saved, capsys):
    assert (
        main(
            [
                "search",
                "--model",
                str(saved["model"]),
                "--images",
                str(saved["images"]),
                "--query",
                QUERY,
                "--top_k",
                "6",
                "--rerank_k",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    hits = _printed(capsys.readouterr().out)
    similarities = [float(h[3]) for h in hits]
    assert similarities == sorted(similarities, reverse=True) and {h[1] for h in hits} == {h[2] for h in hits} == {"-"}


def test_cache_is_reused_refreshed_per_changed_file_and_pruned(saved, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(saved["images"], folder, ignore=shutil.ignore_patterns(CACHE_DIR))
    model = AutoModelForImageTextRetrieval.from_pretrained(saved["model"])
    searcher = Searcher(model, MMFTProcessor.from_pretrained(saved["model"]), str(saved["model"]))
    files, first, report = searcher.folder_embeddings(folder)
    assert (report.embedded, report.reused) == (6, 0)
    names = [str(p.relative_to(folder)) for p in files]
    # Control: overwrite the cached vectors (signatures untouched); a search that reuses the cache must see them.
    cache = EmbeddingCache(next((folder / CACHE_DIR).glob("*.safetensors")))
    signatures = [cache.load()[name][0] for name in names]
    cache.save(names, signatures, torch.zeros_like(first))
    _, reused, report = searcher.folder_embeddings(folder)
    assert (report.embedded, report.reused) == (0, 6) and torch.equal(reused, torch.zeros_like(first))
    # Change one image: only it is embedded again, from the new file; the others still come from the cache.
    changed = folder / "blue.png"
    Image.new("RGB", (40, 40), "orange").save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    _, refreshed, report = searcher.folder_embeddings(folder)
    row = names.index("blue.png")
    assert (report.embedded, report.reused) == (1, 5)
    assert torch.allclose(refreshed[row], searcher.embed_images([str(changed)])[0])
    assert not torch.equal(refreshed[row], first[row]) and refreshed[[i for i in range(6) if i != row]].abs().sum() == 0
    # Remove one image: it is dropped from the cache.
    (folder / "red.png").unlink()
    files, _, report = searcher.folder_embeddings(folder)
    assert (report.embedded, report.reused, report.dropped, len(files)) == (0, 5, 1, 5)


def test_nearest_matches_brute_force_with_and_without_faiss(monkeypatch):
    gallery = F.normalize(torch.randn(500, 16), dim=-1)
    query = F.normalize(torch.randn(16), dim=-1)
    expected = (gallery @ query).topk(7)
    import builtins

    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("faiss hidden by the test")
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(builtins, "__import__", no_faiss)
        scores, indices = nearest(query, gallery, 7, chunk_size=3)
    assert torch.equal(indices, expected.indices) and torch.allclose(scores, expected.values)
    pytest.importorskip("faiss")
    scores, indices = nearest(query, gallery, 7)
    assert torch.equal(indices, expected.indices) and torch.allclose(scores, expected.values, atol=1e-5)


def test_search_names_a_missing_folder(saved, capsys):
    assert (
        main(
            [
                "search",
                "--model",
                str(saved["model"]),
                "--images",
                str(saved["root"] / "nope"),
                "--query",
                "x",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "no such folder" in capsys.readouterr().err
