"""Image-text retrieval Recall@K (both directions), rsum and median rank as an offline ``evaluate`` metric."""

# `evaluate.load` copies this file into its modules cache before importing it, so the logic lives in the installed
# `mmft` package. Import `evaluate` as a module: evaluate picks the first EvaluationModule subclass it finds here.
import datasets
import evaluate

from mmft.metrics.ranking import retrieval_recall

_DESCRIPTION = """\
Recall@K for text-to-image (t2i) and image-to-text (i2t) retrieval, computed from
the 0-based rank of each query's best-ranked correct gallery item, as returned by
`mmft.metrics.ranking.first_match_ranks` / `retrieval_ranks` (ties count against
the query: the rank is the number of incorrect items scoring >= the best correct
one). A query is a hit at K when its rank is < K, so with COCO's five captions
per image an image-to-text query is a hit if ANY of its captions is in the top K.
Recalls are fractions in [0, 1]; rsum is the sum of all of them (in [0, 6] for
the usual K = 1, 5, 10). Median ranks are 1-based, as MedR is usually reported.
The two directions have different lengths (one rank per caption, one per image),
so only `t2i_ranks` is an input column (it can be accumulated with `add_batch`);
`i2t_ranks` is passed to `compute` directly.
"""

_KWARGS_DESCRIPTION = """
Args:
    t2i_ranks (`list` of `int`): 0-based rank of the correct image, per caption query.
    i2t_ranks (`list` of `int`): 0-based rank of the best correct caption, per image query.
    ks (`tuple` of `int`, *optional*, default (1, 5, 10)): the cut-offs K.
Returns:
    t2i_recall@K, i2t_recall@K (`float`): fraction of queries with rank < K, per K.
    rsum (`float`): sum of all the recalls above.
    t2i_median_rank, i2t_median_rank (`float`): 1-based median rank.
Examples:
    >>> recall = mmft.metrics.load_metric("retrieval_recall")
    >>> result = recall.compute(t2i_ranks=[0, 3, 7, 20], i2t_ranks=[0, 1], ks=(1, 5))
    >>> result["t2i_recall@1"], result["t2i_recall@5"], result["i2t_recall@1"], result["i2t_recall@5"]
    (0.25, 0.5, 0.5, 1.0)
    >>> result["rsum"], result["t2i_median_rank"], result["i2t_median_rank"]
    (2.25, 6.0, 1.5)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    """`evaluate` wrapper around :func:`mmft.metrics.ranking.retrieval_recall`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"t2i_ranks": datasets.Value("int64")}),
        )

    def _compute(self, t2i_ranks, i2t_ranks=None, ks=(1, 5, 10)) -> dict[str, float]:
        if i2t_ranks is None:
            raise ValueError("retrieval_recall needs i2t_ranks=... as well as t2i_ranks")
        return retrieval_recall(t2i_ranks, i2t_ranks, ks)
