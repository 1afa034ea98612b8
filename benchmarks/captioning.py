"""Captioning benchmark: generation tokens/s with and without the KV cache, and training step time per decoder plan.

The model is the captioning preset's (`recipes/configs/scenes_captioning.yaml`: its vision tower, MiniLM, the
SmolLM2-135M decoder, bridge and prefix), on real scenes images and captions, both built as the recipe builds them
through mmft's public API. Figures measured side by side in one process, interleaved round by round, so load from
other processes lands on every side alike:

- generation: greedy decoding of exactly `--new_tokens` tokens per image (`min_new_tokens` = `max_new_tokens`), with
  `use_cache=True` (the KV cache: one new token per step) and `use_cache=False` (the whole sequence every step);
- training: one optimizer step (forward, backward, AdamW) per decoder plan (`lora` at the preset's r, `full`,
  `frozen`); vision tower, bridge and prefix train in every plan, as in the preset.

    python benchmarks/captioning.py [--batch 32] [--rounds 3] [--new_tokens 24] [--decoder smollm2]
    python benchmarks/captioning.py --quick      # tiny random decoder; smoke run, figures meaningless
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import recipe_model  # noqa: E402

from mmft import LoraPlan, get_task, parse_recipe_args  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(REPO, "recipes", "configs", "scenes_captioning.yaml")
PLANS = ("lora", "full", "frozen")


def build(recipe, batch_size: int, quick: bool):
    """(model, processor, task, data) of the preset (or, with `quick`, its towers and a tiny random decoder); the
    data holds the first `batch_size` training images."""
    from transformers import LlamaConfig

    task = get_task("captioning")(recipe.task)
    data = task.prepare_data(recipe.data, max_train_samples=batch_size, max_eval_samples=1)
    processor = task.build_processor(recipe.model)
    tiny = {
        "decoder": LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(processor.tokenizer),
        )
    }
    model, processor = recipe_model(task, recipe.model, data, processor, **(tiny if quick else {}))
    return model, processor, task, data


def real_batch(task, data, processor) -> dict[str, torch.Tensor]:
    """The training images of `data` with their first captions, as the recipe's collator makes them (the task's
    training rows are one per (image, caption) pair, numbered by `caption_index`)."""
    task.attach(data, processor)
    firsts = [row for row, index in enumerate(data.train.with_format(None)["caption_index"]) if index == 0]
    return task.collator(processor, 0)([data.train[row] for row in firsts])


def plan_models(model, lora) -> dict[str, tuple]:
    """{plan: (model with the plan applied, AdamW over its trainable parameters)} on deep copies of `model`;
    `lora`: the preset's LoRA arguments (`parse_recipe_args(...).lora`), the decoder's plan replaced."""
    out = {}
    for plan in PLANS:
        planned = LoraPlan(
            vision=lora.lora_vision,
            text=lora.lora_text,
            decoder=plan,
            r=lora.lora_r,
            alpha=lora.lora_alpha,
            dropout=0.0,
            targets=lora.lora_targets,
        ).apply(copy.deepcopy(model))
        trainable = [p for p in planned.parameters() if p.requires_grad]
        out[plan] = (planned.train(), torch.optim.AdamW(trainable, lr=1e-4), sum(p.numel() for p in trainable))
    return out


def train_step(model, optimizer, batch) -> float:
    start = time.perf_counter()
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


@torch.no_grad()
def generate_seconds(model, processor, pixel_values: torch.Tensor, new_tokens: int, use_cache: bool) -> float:
    inputs = {**processor.prompt_features(len(pixel_values)), **processor.start_features(len(pixel_values))}
    start = time.perf_counter()
    out = model.generate(
        pixel_values=pixel_values,
        **inputs,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        use_cache=use_cache,
        do_sample=False,
    )
    assert out.shape[1] == 1 + new_tokens, out.shape
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="images per training step and per generate() call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (after one warm-up)")
    parser.add_argument("--new_tokens", type=int, default=24)
    parser.add_argument("--decoder", default=None, help="decoder name (default: the preset's)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(REPO, "outputs", "benchmarks", "captioning.json"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    recipe = parse_recipe_args(
        ["--config", PRESET, *(["--decoder_model", args.decoder] if args.decoder else [])], "captioning"
    )
    model, processor, task, data = build(recipe, args.batch, args.quick)
    batch = real_batch(task, data, processor)
    tokens = int(batch["attention_mask"].sum()) + args.batch * recipe.task.num_query_tokens

    # generation: cache on and off, interleaved
    model.eval()
    timings = {True: [], False: []}
    for round_index in range(args.rounds + 1):
        for use_cache in (True, False):
            seconds = generate_seconds(model, processor, batch["pixel_values"], args.new_tokens, use_cache)
            if round_index:  # round 0 warms up
                timings[use_cache].append(seconds)
    generated = args.batch * args.new_tokens
    generation = {
        f"tokens_per_second_{'cache' if k else 'no_cache'}": generated / statistics.median(v)
        for k, v in timings.items()
    }
    generation["cache_speedup"] = statistics.median(timings[False]) / statistics.median(timings[True])

    # training: one step per plan, interleaved
    planned = plan_models(model, recipe.lora)
    del model
    steps = {plan: [] for plan in PLANS}
    for round_index in range(args.rounds + 1):
        for plan, (planned_model, optimizer, _) in planned.items():
            seconds = train_step(planned_model, optimizer, batch)
            if round_index:
                steps[plan].append(seconds)
    training = {
        plan: {
            "step_seconds": statistics.median(steps[plan]),
            "trainable_parameters": planned[plan][2],
            "samples_per_second": args.batch / statistics.median(steps[plan]),
        }
        for plan in PLANS
    }
    result = {
        "batch": args.batch,
        "decoder_tokens_per_batch": tokens,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "generation": generation,
        "training": training,
        "quick": args.quick,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
