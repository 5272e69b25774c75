"""Linear evaluation of a learned representation (the SimCLR protocol; Hu et al. 2022, seed 001)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["linear_evaluation"]


def linear_evaluation(X: Any, truth: Any, *, n_splits: int = 5, random_state: int = 0) -> float:
    """Linear evaluation of a representation: cross-validated accuracy of a linear classifier.

    The quality measure of learned representations in SimCLR papers and in Hu et al. (2022, Fig. 2b,
    seed 001): a multinomial logistic regression is trained on the frozen (standardised)
    representations with the true classes and its accuracy on held-out images is reported
    (stratified ``n_splits``-fold cross-validation; classes with fewer members than folds are
    kept in training folds only through the smaller number of folds).

    Parameters
    ----------
    X
        Representations ``(n_images, d)``.
    truth
        True class of every image.
    n_splits
        Number of cross-validation folds (lowered to the size of the smallest class, at least 2).
    random_state
        Seed of the fold assignment.

    Returns
    -------
    Mean held-out accuracy.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    arr = np.asarray(X, dtype=np.float64)
    y = np.asarray(truth)
    if arr.ndim != 2 or y.shape != (arr.shape[0],):
        raise ValueError(f"`X` must be (n_images, d) and `truth` (n_images,); received {arr.shape} and {y.shape}.")
    _, counts = np.unique(y, return_counts=True)
    if counts.size < 2 or counts.min() < 2:
        raise ValueError("`truth` needs at least 2 classes with at least 2 images each for a linear evaluation.")
    folds = StratifiedKFold(n_splits=max(2, min(n_splits, int(counts.min()))), shuffle=True, random_state=random_state)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(model, arr, y, cv=folds, scoring="accuracy").mean())
