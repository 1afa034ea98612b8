"""A fake Hugging Face Hub for push tests: uploads are intercepted at huggingface_hub's API layer (create_repo /
create_commit write the committed files to a local folder instead of the network); everything above it runs for real."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import EntryNotFoundError


@contextlib.contextmanager
def fake_hub(root: Path) -> Iterator[SimpleNamespace]:
    """Inside: a fake Hub whose `.root / repo_id` holds the committed files, `.commits` the commit messages."""
    commits = []

    def create_repo(self, repo_id, *args, **kwargs):
        (root / repo_id).mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, *args, commit_message="", **kwargs):
        for operation in operations:
            if isinstance(operation, CommitOperationAdd):
                target = root / repo_id / operation.path_in_repo
                target.parent.mkdir(parents=True, exist_ok=True)
                with operation.as_file() as handle:
                    target.write_bytes(handle.read())
        commits.append(commit_message)
        return CommitInfo(f"https://huggingface.co/{repo_id}/commit/{'0' * 40}", commit_message, "", "0" * 40)

    def validate_yaml(self, content, *args, **kwargs):  # the Hub validates README metadata server-side
        ModelCard(content, ignore_metadata_errors=False)  # parses the front matter; raises on invalid YAML

    def load_card(cls, repo_id, *args, **kwargs):  # transformers reads the repo's card before it pushes its own
        card = root / repo_id / "README.md"
        if not card.is_file():
            raise EntryNotFoundError(f"{repo_id} has no README.md")
        return cls(card.read_text())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelCard, "load", classmethod(load_card))  # the real one retries the network for ~45 s
        patch.setattr(HfApi, "create_repo", create_repo)
        patch.setattr(HfApi, "create_commit", create_commit)
        patch.setattr(HfApi, "_validate_yaml", validate_yaml)
        # With hf_xet installed, upload_folder streams through its own upload pipeline; take the single-commit path.
        patch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)
        root.mkdir(parents=True, exist_ok=True)
        yield SimpleNamespace(root=root, commits=commits)
