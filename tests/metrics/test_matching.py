import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from tasks.metrics import get_metric
from tasks.metrics.matching import MatchingInputs, best_threshold


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(labels * 0.3 + rng.normal(size=300), 1)  # rounding makes ties
    threshold = 0.2
    result = get_metric("matching")(MatchingInputs([str(i) for i in range(300)], labels, scores,
                                                   threshold))
    predicted = (scores >= threshold).astype(int)
    assert result.corpus["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result.corpus["precision"] == pytest.approx(precision_score(labels, predicted))
    assert result.corpus["recall"] == pytest.approx(recall_score(labels, predicted))
    assert result.corpus["f1"] == pytest.approx(f1_score(labels, predicted))
    assert result.corpus["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    np.testing.assert_array_equal(result.per_sample["correct"], predicted == labels)


def test_best_threshold_maximises_accuracy():
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    threshold = best_threshold(labels, scores)
    assert threshold == pytest.approx(0.25)  # 5/6 correct; 0.575 also gives 5/6, 0.25 is first
    assert ((scores >= threshold) == labels).mean() == pytest.approx(5 / 6)


def test_single_class_leaves_auroc_out_and_bad_inputs_fail():
    result = get_metric("matching")(MatchingInputs(["a", "b"], [1, 1], [0.2, 0.9], 0.5))
    assert "auroc" not in result.corpus and "AUROC" in result.extra["warnings"][0]
    with pytest.raises(ValueError, match="0 or 1"):
        MatchingInputs(["a"], [2], [0.1], 0.5)
    with pytest.raises(ValueError, match="NaN"):
        MatchingInputs(["a"], [1], [np.nan], 0.5)
