"""Which model a run keeps: whether it evaluates during training (then it needs a validation split), and the metric
that picks the best checkpoint (`--load_best_model_at_end`, `--early_stopping_patience`)."""

from __future__ import annotations

import logging

from .arguments import RecipeArguments, SelectionArguments, check_selection
from .tasks import Task

logger = logging.getLogger("mmft")


def evaluates_during_training(args: RecipeArguments) -> bool:
    """Whether the run evaluates before its end (then it needs a validation split): an `--eval_strategy`, model
    selection (`--load_best_model_at_end`) or early stopping, and training at all."""
    training, selection = args.training, args.selection or SelectionArguments()
    if args.model.eval_only:
        return False
    return (
        training.eval_strategy != "no"
        or training.load_best_model_at_end
        or selection.early_stopping_patience is not None
    )


def select_by_main_metric(task: Task, args: RecipeArguments) -> None:
    """With `--load_best_model_at_end` or `--early_stopping_patience` and no `--metric_for_best_model`, select by
    the task's main metric on the validation split (higher is better). transformers fills in "loss" when the flag is
    not given, so "loss" is taken as not given; `--metric_for_best_model eval_loss` selects by the loss."""
    training, selection = args.training, args.selection or SelectionArguments()
    patience = selection.early_stopping_patience
    check_selection(selection, training)  # parse_recipe_args checked it too; a library caller may not have
    select_by(training, patience, f"eval_{task.selection_metric()}", ("loss",), "the validation split")


def select_by(training, patience: int | None, metric: str, unset: tuple[str, ...], where: str) -> None:
    """With `--load_best_model_at_end` or early stopping (`patience`), select by `metric` (higher is better) unless
    `--metric_for_best_model` names another; the values in `unset` count as not given (transformers fills in
    "loss"). Logs the choice, `where` naming the splits it is read on."""
    if not (training.load_best_model_at_end or patience is not None):
        return
    if training.metric_for_best_model in (None, *unset):
        training.metric_for_best_model = metric
        training.greater_is_better = True
    logger.warning(
        "mmft: model selection by %s on %s (%s is better)%s",
        training.metric_for_best_model,
        where,
        "higher" if training.greater_is_better else "lower",
        f"; early stopping after {patience} evaluation(s) without improvement" if patience is not None else "",
    )


__all__ = ["evaluates_during_training", "select_by", "select_by_main_metric"]
