"""The push: `output_dir` (final model, processor, card) uploaded to the run's Hub repo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .save import STAGING_PREFIX


def push_output_dir(
    trainer, commit_message: str = "End of training", before_upload: Callable[[str, str], None] | None = None
) -> Any:
    """
    Upload `output_dir` (final model, processor, card) to `args.hub_model_id` the way `Trainer.push_to_hub` does,
    without its re-save of the unmerged model and its card, which would overwrite the final ones.
    `before_upload(output_dir, repo_id)` adds files first (the demo's Space files: `mmft.demo.space.write_space`).
    """
    args = trainer.args
    if not trainer.is_world_process_zero():
        return None
    if trainer.hub_model_id is None:
        trainer.init_hf_repo()
    if before_upload is not None:
        before_upload(args.output_dir, trainer.hub_model_id)
    if getattr(trainer, "push_in_progress", None) is not None:  # a checkpoint push still uploading
        trainer.push_in_progress.wait_until_done()
    from transformers.utils.hub import hf_api

    return hf_api().upload_folder(
        repo_id=trainer.hub_model_id,
        folder_path=str(args.output_dir),
        commit_message=commit_message,
        token=args.hub_token,
        revision=args.hub_revision,
        ignore_patterns=["_*", "checkpoint-*", "incomplete-checkpoint-*", f"{STAGING_PREFIX}*"],
    )


__all__ = ["push_output_dir"]
