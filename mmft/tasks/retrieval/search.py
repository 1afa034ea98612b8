"""`mmft search`: embed a folder of images (or a file of captions) once, cache it beside them, and answer queries.

    mmft search --model outputs/scenes_retrieval --images photos/ --query "a red circle above a blue square"
    mmft search --model outputs/scenes_retrieval --image scene.png --captions captions.txt

The embeddings live in `<folder>/.mmft_search/<model key>.safetensors` (for captions: beside the text file). Each
image is stored with its size and modification time, so a changed, added or removed file is re-embedded or dropped
on the next search and the rest is reused; captions are keyed by their text. The nearest items come from `faiss`
when it is installed (exact inner product), else from a chunked matmul; the bridge's matching head then re-ranks
the top `rerank_k` of them (0: off) by the model's `rerank_score` (by default its log-odds of a match plus the
scaled similarity). Printed per hit: that score, P(match) and the cosine similarity. Embeddings, P(match) and the
re-ranked order come from the toolkit retrieval evaluation uses too (`mmft.inference`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...atomic import atomic_path, atomic_write_text
from ...image_utils import load_rgb
from ...inference.embeddings import embed_images, embed_texts
from ...inference.scores import match_probability, rerank
from ...metrics.ranking import top_candidates

logger = logging.getLogger("mmft")

CACHE_DIR = ".mmft_search"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


@dataclass
class Hit:
    item: str  # an image path or a caption
    similarity: float  # cosine similarity of the embeddings
    match: float | None = None  # probability of "match" from the matching head (None: not re-ranked)
    score: float | None = None  # re-ranking score, the model's `rerank_score` (None: not re-ranked)


@dataclass
class CacheReport:
    """What one search did with the cache: items embedded now, items reused, items dropped (removed files)."""

    embedded: int = 0
    reused: int = 0
    dropped: int = 0


def model_key(model_dir: str) -> str:
    """A short key of a saved model: its config and the size and mtime of its weight files (a Hub id: the id)."""
    folder = Path(model_dir)
    digest = hashlib.sha256(str(folder.resolve() if folder.is_dir() else model_dir).encode())
    for name in ("config.json", *WEIGHT_FILES):
        path = folder / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, sorted), leaving out the cache folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: no such folder")
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and CACHE_DIR not in p.parts
    )


def _signature(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class EmbeddingCache:
    """Embeddings of items (file names or captions), each stored with a signature that says when it is stale."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, tuple[str, torch.Tensor]]:
        """item -> (signature, embedding); empty when there is no cache or it cannot be read."""
        if not self.path.is_file():
            return {}
        try:
            embeddings = load_file(str(self.path))["embeddings"]
            items = json.loads((self.path.with_suffix(".json")).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as error:
            logger.warning("mmft search: ignoring an unreadable cache %s (%s)", self.path, error)
            return {}
        if len(items) != len(embeddings):
            return {}
        return {item: (signature, embeddings[row]) for row, (item, signature) in enumerate(items)}

    def save(self, items: Sequence[str], signatures: Sequence[str], embeddings: torch.Tensor) -> None:
        """Write both files (items list last, so a half-written cache never pairs with the wrong embeddings)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            index = self.path.with_suffix(".json")
            with atomic_path(self.path) as temporary:  # which also undoes safetensors' 0600 (mmft.file_modes)
                save_file({"embeddings": embeddings.contiguous()}, str(temporary))
            atomic_write_text(index, json.dumps([[i, s] for i, s in zip(items, signatures)]))
        except OSError as error:  # a read-only folder: search still works, it just embeds again next time
            logger.warning("mmft search: could not write the embedding cache %s (%s)", self.path, error)


def cached_embeddings(
    cache: EmbeddingCache, items: list[str], signatures: list[str], embed: Callable[[list[str]], torch.Tensor]
) -> tuple[torch.Tensor, CacheReport]:
    """Embeddings of `items` in order: reused where the cached signature matches, `embed(stale items)` otherwise."""
    cached = cache.load()
    stale = [
        i for i, (item, signature) in enumerate(zip(items, signatures)) if cached.get(item, (None,))[0] != signature
    ]
    fresh = embed([items[i] for i in stale]) if stale else None
    rows, fresh_rows = [], dict(zip(stale, range(len(stale))))
    for i, item in enumerate(items):
        rows.append(fresh[fresh_rows[i]] if i in fresh_rows else cached[item][1])
    embeddings = torch.stack(rows) if rows else torch.empty(0)
    report = CacheReport(len(stale), len(items) - len(stale), len(set(cached) - set(items)))
    if report.embedded or report.dropped or not cache.path.is_file():
        cache.save(items, signatures, embeddings)
    return embeddings, report


class Searcher:
    """A loaded retrieval model with its processor: embeds, searches and re-ranks."""

    def __init__(
        self, model, processor, model_dir: str, device: str = "cpu", batch_size: int = 32, max_length: int = 64
    ) -> None:
        self.model, self.processor = model.to(device).eval(), processor
        self.key, self.device, self.batch_size, self.max_length = model_key(model_dir), device, batch_size, max_length

    def embed_images(self, paths: list[str]) -> torch.Tensor:
        """L2-normalised embeddings (N, P) of image files, by the one embedding path (`mmft.inference.embeddings`)."""
        batches = (
            self.processor(images=[load_rgb(p) for p in paths[start : start + self.batch_size]], return_tensors="pt")[
                "pixel_values"
            ]
            for start in range(0, len(paths), self.batch_size)
        )
        return embed_images(self.model, batches, self.device).embeds

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised embeddings (N, P) of texts, by the one embedding path (`mmft.inference.embeddings`)."""
        return embed_texts(self.model, texts, self._tokens, self.batch_size, self.device).embeds

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        inputs = self.processor(text=texts, max_length=self.max_length, return_tensors="pt")
        return {key: inputs[key].to(self.device) for key in ("input_ids", "attention_mask")}

    def folder_embeddings(self, folder: Path) -> tuple[list[Path], torch.Tensor, CacheReport]:
        files = image_files(folder)
        if not files:
            raise FileNotFoundError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        names = [str(p.relative_to(folder)) for p in files]
        cache = EmbeddingCache(folder / CACHE_DIR / f"{self.key}.safetensors")
        embeddings, report = cached_embeddings(
            cache,
            names,
            [_signature(p) for p in files],
            lambda stale: self.embed_images([str(folder / n) for n in stale]),
        )
        return files, embeddings, report

    def caption_embeddings(self, captions_file: Path) -> tuple[list[str], torch.Tensor, CacheReport]:
        lines = captions_file.read_text(encoding="utf-8").splitlines()
        captions = [line.strip() for line in lines if line.strip()]
        if not captions:
            raise ValueError(f"--captions {captions_file}: no captions (one per line)")
        cache = EmbeddingCache(captions_file.parent / CACHE_DIR / f"{captions_file.name}.{self.key}.safetensors")
        unique = list(dict.fromkeys(captions))  # a repeated line is one item
        embeddings, report = cached_embeddings(cache, unique, unique, self.embed_texts)
        return unique, embeddings, report

    @torch.no_grad()
    def match(self, images: list, texts: list[str]) -> torch.Tensor:
        """Matching logits (B, 2) of aligned (image, text) pairs from the matching head over the bridge."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            pixels = self.processor(
                images=[load_rgb(i) for i in images[start : start + self.batch_size]], return_tensors="pt"
            )["pixel_values"].to(self.device)
            out.append(self.model.match(pixels, **self._tokens(texts[start : start + self.batch_size])).float().cpu())
        return torch.cat(out)

    def rank(
        self,
        query: torch.Tensor,
        gallery: torch.Tensor,
        items: list,
        pair: Callable[[list], tuple[list, list]],
        top_k: int,
        rerank_k: int,
    ) -> list[Hit]:
        """The `top_k` best items for one query embedding (P,); `pair(candidates) -> (images, texts)` to match."""
        similarities, indices = nearest(query, gallery, max(top_k, rerank_k))
        hits = [Hit(str(items[i]), float(s)) for s, i in zip(similarities.tolist(), indices.tolist())]
        if rerank_k:
            head = hits[:rerank_k]
            logits = self.match(*pair([hit.item for hit in head]))
            scores = self.model.rerank_score(logits, similarities[: len(head)].float()).float().cpu()
            for hit, probability, score in zip(head, match_probability(logits).tolist(), scores.tolist()):
                hit.match, hit.score = probability, score
            hits = [head[i] for i in rerank(torch.arange(len(head)), scores).tolist()] + hits[rerank_k:]
        return hits[:top_k]


def nearest(query: torch.Tensor, gallery: torch.Tensor, k: int, chunk_size: int = 4096) -> tuple[torch.Tensor, ...]:
    """(similarities (k,), indices (k,)) of the k gallery rows with the largest inner product with `query` (P,)."""
    k = min(k, len(gallery))
    try:
        import faiss
    except ImportError:
        scores, indices = top_candidates(query[None], gallery, k, chunk_size)
        return scores[0], indices[0]
    index = faiss.IndexFlatIP(gallery.shape[1])  # exact search; the gallery is already L2-normalised
    index.add(gallery.float().numpy())
    scores, indices = index.search(query[None].float().numpy(), k)
    return torch.from_numpy(scores[0]), torch.from_numpy(indices[0]).long()


def search_images(
    searcher: Searcher, folder: str, query: str, top_k: int = 5, rerank_k: int = 16
) -> tuple[list[Hit], CacheReport]:
    """Text -> image: the best images of `folder` for `query`."""
    files, gallery, report = searcher.folder_embeddings(Path(folder))
    hits = searcher.rank(
        searcher.embed_texts([query])[0], gallery, files, lambda paths: (paths, [query] * len(paths)), top_k, rerank_k
    )
    return hits, report


def search_captions(
    searcher: Searcher, image: str, captions_file: str, top_k: int = 5, rerank_k: int = 16
) -> tuple[list[Hit], CacheReport]:
    """Image -> text: the best captions of `captions_file` (one per line) for `image`."""
    captions, gallery, report = searcher.caption_embeddings(Path(captions_file))
    picture = load_rgb(image)
    hits = searcher.rank(
        searcher.embed_images([image])[0],
        gallery,
        captions,
        lambda texts: ([picture] * len(texts), texts),
        top_k,
        rerank_k,
    )
    return hits, report


__all__ = [
    "CACHE_DIR",
    "CacheReport",
    "EmbeddingCache",
    "Hit",
    "Searcher",
    "cached_embeddings",
    "image_files",
    "model_key",
    "nearest",
    "search_captions",
    "search_images",
]
