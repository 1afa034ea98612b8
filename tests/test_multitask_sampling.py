"""The multi-task data side: task draws per strategy, the same draws and rows on every process, exact resume.

Each property has its negative control beside it: counts tested against the wrong proportions fail the same test,
a 2-process read compared with a 1-process read of the wrong batch differs, a stream not given its saved state
continues elsewhere, a Trainer resumed with `--ignore_data_skip` trains on other rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers_launch import free_port
from helpers_multitask import SIZES, TinyMultiTaskConfig, TinyMultiTaskModel, gloo_worker, make_stream, take
from scipy.stats import chisquare
from transformers import TrainerCallback, TrainingArguments

from mmft.multitask import STRATEGIES, TaskSampler, task_draw_counts
from mmft.multitask.trainer import STATE_FILE, MultiTaskTrainer

DRAWS = 20_000
TASK_SIZES = {"vqa": 40_000, "captioning": 9_000, "retrieval": 1_000}
SAMPLERS = {
    "proportional": {"strategy": "proportional"},
    "proportional, weighted": {"strategy": "proportional", "weights": {"retrieval": 5.0}},
    "temperature 2": {"strategy": "temperature", "temperature": 2.0},
    "temperature 5, weighted": {"strategy": "temperature", "temperature": 5.0, "weights": {"vqa": 0.5}},
}


def _expected(sizes: dict[str, int], weights: dict[str, float], temperature: float) -> np.ndarray:
    """The proportions written out by hand: p_i ∝ w_i * n_i ** (1 / T)."""
    scores = np.array([weights.get(t, 1.0) * n ** (1 / temperature) for t, n in sizes.items()])
    return scores / scores.sum()


@pytest.mark.parametrize("name", SAMPLERS)
def test_draw_counts_follow_the_strategy_proportions(name):
    kwargs = dict(SAMPLERS[name])
    sampler = TaskSampler(TASK_SIZES, seed=7, **kwargs)
    expected = _expected(TASK_SIZES, kwargs.get("weights", {}), kwargs.get("temperature", 1.0))
    assert np.allclose(list(sampler.probabilities().values()), expected, rtol=1e-12)
    counts = np.array(list(task_draw_counts(sampler, DRAWS).values()))
    assert chisquare(counts, DRAWS * expected).pvalue > 1e-3
    # Binomial bound per task too: within 4 standard deviations.
    assert np.all(np.abs(counts - DRAWS * expected) <= 4 * np.sqrt(DRAWS * expected * (1 - expected)))
    # Negative control: the same counts against uniform proportions (what a broken strategy would give) fail.
    assert chisquare(counts, np.full(3, DRAWS / 3)).pvalue < 1e-6


def test_round_robin_takes_the_tasks_in_turn_exactly():
    sampler = TaskSampler(TASK_SIZES, "round_robin", seed=3)
    assert [sampler.draw() for _ in range(7)] == ["vqa", "captioning", "retrieval"] * 2 + ["vqa"]
    counts = task_draw_counts(sampler, DRAWS - 2)  # 19,998 = 3 x 6,666
    assert counts == dict.fromkeys(TASK_SIZES, 6_666)
    assert sampler.probabilities() == pytest.approx(dict.fromkeys(TASK_SIZES, 1 / 3))


def test_temperature_one_is_proportional_and_large_tends_to_uniform():
    proportional = TaskSampler(TASK_SIZES, "proportional", seed=1)
    t1 = TaskSampler(TASK_SIZES, "temperature", temperature=1.0, seed=1)
    assert t1.probabilities() == pytest.approx(proportional.probabilities(), rel=1e-12)
    assert [t1.peek(k) for k in range(2000)] == [proportional.peek(k) for k in range(2000)]
    hot = TaskSampler(TASK_SIZES, "temperature", temperature=1e6, seed=1)
    assert list(hot.probabilities().values()) == pytest.approx([1 / 3] * 3, abs=1e-5)
    counts = np.array(list(task_draw_counts(hot, DRAWS).values()))
    assert chisquare(counts, np.full(3, DRAWS / 3)).pvalue > 1e-3
    # Negative control: at T = 2 the draws are far from uniform.
    warm = np.array(list(task_draw_counts(TaskSampler(TASK_SIZES, "temperature", temperature=2.0), DRAWS).values()))
    assert chisquare(warm, np.full(3, DRAWS / 3)).pvalue < 1e-6


def test_draws_depend_on_the_seed_alone_not_on_global_rngs():
    first = TaskSampler(TASK_SIZES, seed=5)
    draws = [first.draw() for _ in range(500)]
    torch.manual_seed(123)
    np.random.seed(123)
    assert [TaskSampler(TASK_SIZES, seed=5).draw() for _ in range(1)] + [
        TaskSampler(TASK_SIZES, seed=5).peek(k) for k in range(1, 500)
    ] == draws
    assert [TaskSampler(TASK_SIZES, seed=6).peek(k) for k in range(500)] != draws  # the seed does matter


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "uniform"}, "known: proportional, temperature, round_robin"),
        ({"strategy": "temperature"}, "needs --task_temperature > 0"),
        ({"strategy": "proportional", "temperature": 2.0}, "temperature strategy only"),
        ({"strategy": "round_robin", "weights": {"vqa": 2.0}}, "no task weights"),
        ({"strategy": "proportional", "weights": {"ocr": 2.0}}, "unknown task(s) ocr"),
        ({"strategy": "proportional", "weights": {"vqa": 0.0}}, "must be > 0"),
    ],
)
def test_sampler_refuses_bad_settings_in_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TaskSampler(TASK_SIZES, **kwargs)
    assert set(STRATEGIES) == {"proportional", "temperature", "round_robin"}


def test_two_gloo_processes_draw_the_same_tasks_and_read_one_process_double_batch(tmp_path):
    batch, count, accumulation = 3, 16, 2
    out = tmp_path / "gathered.json"
    # fork: the children inherit the imported modules (a spawned child would spend ~10 s importing mmft again)
    mp.start_processes(
        gloo_worker, args=(2, free_port(), str(out), batch, count, accumulation), nprocs=2, start_method="fork"
    )
    rank0, rank1 = json.loads(out.read_text())
    single = take(make_stream(2 * batch, accumulation=accumulation), count)
    assert [t for t, _ in rank0] == [t for t, _ in rank1] == [t for t, _ in single]  # same task on every process
    assert [a + b for (_, a), (_, b) in zip(rank0, rank1)] == [rows for _, rows in single]  # rows, in order
    assert len({t for t, _ in single}) > 1  # the comparison spans several tasks
    # Negative control: one process at the per-device batch B (not 2B) reads other rows.
    wrong = take(make_stream(batch, accumulation=accumulation), count)
    assert [a + b for (_, a), (_, b) in zip(rank0, rank1)] != [rows for _, rows in wrong]


@pytest.mark.parametrize("strategy", ["proportional", "round_robin"])
@pytest.mark.parametrize("mix", [False, True], ids=["task per step", "mixed within step"])
def test_resumed_stream_continues_bit_exactly(strategy, mix):
    settings = {"strategy": strategy, "accumulation": 3, "mix": mix, "seed": 4}
    uninterrupted = take(make_stream(4, **settings), 40)
    for stop in (7, 21):  # mid-step (7 = 2 x 3 + 1) and at a step boundary
        first = make_stream(4, **settings)
        assert take(first, stop) == uninterrupted[:stop]
        state = json.loads(json.dumps(first.state_dict()))  # as it goes through the checkpoint file
        resumed = make_stream(4, **settings)
        resumed.load_state_dict(state)
        assert take(resumed, 40 - stop) == uninterrupted[stop:]
        # Negative control: a fresh stream not given the state starts over, so it continues elsewhere.
        assert take(make_stream(4, **settings), 40 - stop) != uninterrupted[stop:]


def test_stream_refuses_a_state_from_other_data():
    state = make_stream(4).state_dict()
    with pytest.raises(ValueError, match="read other data"):
        make_stream(4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="read other data"):
        make_stream(4, sizes={**SIZES, "retrieval": 6}).load_state_dict(state)


def test_every_task_cycles_through_its_own_epochs():
    stream = make_stream(4, strategy="round_robin")
    batches = take(stream, 3 * 12)  # 12 batches of 4 per task
    for task, size in SIZES.items():
        rows = [r for t, rs in batches if t == task for r in rs]
        epochs = len(rows) // size
        for epoch in range(epochs):
            assert sorted(rows[epoch * size : (epoch + 1) * size]) == list(range(size))  # each epoch: every row once
        assert rows[:size] != rows[size : 2 * size]  # ... in a new order each epoch


def test_mixing_within_a_step_changes_task_within_a_step():
    steps, accumulation = 50, 4
    for mix in (False, True):
        batches = take(
            make_stream(2, accumulation=accumulation, mix=mix, strategy="temperature", temperature=50.0),
            steps * accumulation,
        )
        per_step = [{t for t, _ in batches[s * accumulation : (s + 1) * accumulation]} for s in range(steps)]
        mixed = sum(len(tasks) > 1 for tasks in per_step)
        if mix:
            assert mixed > steps // 2  # near-uniform draws over 3 tasks: most steps hold two or three tasks
        else:
            assert mixed == 0  # every micro-batch of a step from the step's task


class _KillAt(TrainerCallback):
    """Stop the process the hard way at `step` (after an earlier checkpoint), as a kill would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _train(output_dir, resume=None, kill_at=None, ignore_data_skip=False) -> TinyMultiTaskModel:
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=8,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        learning_rate=0.05,
        save_strategy="steps",
        save_steps=3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        ignore_data_skip=ignore_data_skip,
        disable_tqdm=True,
    )
    model = TinyMultiTaskModel(TinyMultiTaskConfig())
    stream = make_stream(args.per_device_train_batch_size, accumulation=args.gradient_accumulation_steps)
    trainer = MultiTaskTrainer(
        model=model, args=args, train_dataset=stream, callbacks=[_KillAt(kill_at)] if kill_at else []
    )
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        pass
    return model


def test_trainer_resume_after_a_kill_is_bit_exact(tmp_path, one_cpu_thread):
    reference = _train(tmp_path / "reference")
    assert len(reference.seen) == 8 * 2 and len({t for t, _ in reference.seen}) > 1
    _train(tmp_path / "killed", kill_at=5)  # checkpoint-3 written, steps 4 and 5 lost
    checkpoint = tmp_path / "killed" / "checkpoint-3"
    state = json.loads((checkpoint / STATE_FILE).read_text())
    assert (state["steps"], state["micro_in_step"]) == (3, 0)
    resumed = _train(tmp_path / "killed", resume=str(checkpoint))
    assert resumed.seen == reference.seen[3 * 2 :]  # the same (task, rows) for steps 4..8
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # Negative control: the stream not restored (--ignore_data_skip) trains steps 4..8 on other rows and weights.
    restarted = _train(tmp_path / "killed", resume=str(checkpoint), ignore_data_skip=True)
    assert restarted.seen != reference.seen[3 * 2 :]
    assert not all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), restarted.state_dict().values()))
