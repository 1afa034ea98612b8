"""The inference and evaluation toolkit every task, `mmft search`, the pipelines and `explain` share.

- `sharded`: one map-and-gather of rows over processes (the evaluations that score outside `Trainer.predict`);
- `embeddings`: one embedding path (batched, no grad, L2-normalised) for retrieval evaluation, `mmft search` and
  captioning's nearest-image baseline;
- `scores`: one logits -> scores rule, one top-k and one re-rank order;
- `bad_rows`: which eval rows are scored, leaving out the rows rejected as unreadable, the same in every task.

This file imports none of them, so the model side (the pipelines) can import `scores` without the data side.
"""
