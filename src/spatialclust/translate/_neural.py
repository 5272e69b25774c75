"""Neural stage-1 and stage-2 estimators (scikit-learn API, PyTorch inside, imported lazily).

Regularisation as the seed asks: weight decay (AdamW), dropout, and early stopping on an inner
validation split made of whole spatial blocks (when coordinates are passed to ``fit``), restoring the
weights of the best validation epoch.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .._logging import logger
from ._cv import validation_split
from ._estimators import CONSTANT_LOGIT, _log_constants, _presence_rows, _Standardized, check_xy, constant_columns

__all__ = ["MLPIntensityRegressor", "MLPPresenceClassifier", "TransformerIntensityRegressor"]


#: Tiny CPU models run on one thread: with a few thousand parameters, thread synchronisation costs
#: more than it saves (measured 30x slower with 2 threads on a loaded 2-core machine).
CPU_THREADS = 1


class _TorchEstimator(_Standardized, BaseEstimator):
    """Shared training loop: AdamW, mini-batches, early stopping on a spatial validation split."""

    def _check_common(self) -> None:
        for name in ("lr", "max_epochs", "batch_size"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)!r}.")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {self.weight_decay!r}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout!r}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"`validation_fraction` must be in (0, 1), got {self.validation_fraction!r}.")

    def _train(self, module, loss_fn, Xs: np.ndarray, T: np.ndarray, W: np.ndarray, coords, groups) -> None:

        from .._compat import resolve_device

        from ..models import torch_threads

        device = resolve_device(self.device)
        with torch_threads(CPU_THREADS if device == "cpu" else None):
            self._train_loop(module, loss_fn, Xs, T, W, coords, groups, device)

    def _train_loop(self, module, loss_fn, Xs, T, W, coords, groups, device) -> None:
        import torch

        from ..models import optimizer_step

        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        if coords is None:
            logger.info("%s: no coordinates given, early stopping uses a random validation split.", type(self).__name__)
        train, val = validation_split(coords, len(Xs), groups=groups, fraction=self.validation_fraction, random_state=self.random_state)
        module = module.to(device)
        x = torch.as_tensor(Xs, dtype=torch.float32, device=device)
        t = torch.as_tensor(T, dtype=torch.float32, device=device)
        w = torch.as_tensor(W, dtype=torch.float32, device=device)
        optimizer = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, wait, history = np.inf, None, 0, []
        for epoch in range(int(self.max_epochs)):
            module.train()
            order = rng.permutation(train)
            for start in range(0, len(order), int(self.batch_size)):
                b = torch.as_tensor(order[start : start + int(self.batch_size)], device=device)
                optimizer_step(loss_fn(module(x[b]), t[b], w[b]), optimizer, None)
            module.eval()
            with torch.inference_mode():
                v = torch.as_tensor(val, device=device)
                val_loss = float(loss_fn(module(x[v]), t[v], w[v]))
            history.append(val_loss)
            if best_state is None or val_loss < best - 1e-3 * abs(best) - 1e-9:  # improvement of at least 0.1 %
                best, wait = val_loss, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                wait += 1
                if wait >= self.patience:
                    break
        if best_state is None or not np.isfinite(best):
            raise FloatingPointError(f"{type(self).__name__}: the validation loss is not finite; lower `lr`.")
        module.load_state_dict(best_state)
        self.module_ = module.cpu().eval()
        self.n_epochs_ = len(history)
        self.best_epoch_ = int(np.argmin(history)) + 1
        self.validation_loss_ = history
        logger.debug("%s: stopped after %d epochs (best %d, val loss %.4g)", type(self).__name__, self.n_epochs_, self.best_epoch_, best)

    def _forward(self, Xs: np.ndarray, **kwargs: Any):
        import torch

        from ..models import torch_threads

        with torch.inference_mode(), torch_threads(CPU_THREADS):
            return self.module_(torch.as_tensor(Xs, dtype=torch.float32), **kwargs)

    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild :attr:`module_` (saved in checkpoints)."""
        check_is_fitted(self, "module_")
        return {"n_inputs": int(self.n_features_in_), "n_outputs": int(self.n_outputs_)}


def _mlp_init(*, dropout: float):
    """The ``__init__`` of both MLP estimators: one parameter list, each estimator with its own
    ``dropout`` default (scikit-learn reads an estimator's parameters from its ``__init__`` signature)."""

    def __init__(self, hidden_sizes: tuple[int, ...] = (64,), dropout: float = dropout, weight_decay: float = 1e-3,
                 lr: float = 3e-3, max_epochs: int = 200, patience: int = 20, batch_size: int = 128,
                 validation_fraction: float = 0.2, random_state: int = 0, device: str = "auto") -> None:
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device

    return __init__


class _MLP:
    """The fully connected network of both MLP estimators."""

    def build(self, n_inputs: int, n_outputs: int):
        from ._nets import MLP

        return MLP(n_inputs, n_outputs, tuple(self.hidden_sizes), self.dropout)


class MLPPresenceClassifier(_MLP, _TorchEstimator, ClassifierMixin):
    """Stage 1: one network with a sigmoid output per metabolite (multi-label presence).

    Class imbalance: the binary cross-entropy of each metabolite weighs its positive spots by
    ``n_absent / n_present`` (``pos_weight``; clipped to [0.02, 50]). Metabolites constant in training
    are predicted constant.

    Parameters
    ----------
    hidden_sizes
        Widths of the hidden layers.
    dropout, weight_decay, lr, max_epochs, patience, batch_size
        Regularisation and optimisation (AdamW, early stopping after ``patience`` epochs without
        improvement of the validation loss).
    validation_fraction
        Fraction of spots (whole spatial blocks) held out for early stopping.
    random_state
        Seed of initialisation, batches and validation split.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    __init__ = _mlp_init(dropout=0.2)

    def fit(self, X, Y, *, coords=None, groups=None, **fit_params) -> MLPPresenceClassifier:
        import torch

        self._check_common()
        X, Y = check_xy(X, Y, binary=True)
        Xs = self._fit_scaler(X)
        self.n_outputs_ = Y.shape[1]
        self.constant_ = constant_columns(Y)
        _log_constants(self.constant_)
        pos = Y.sum(0)
        pos_weight = torch.as_tensor(np.clip((len(Y) - pos) / np.maximum(pos, 1), 0.02, 50.0), dtype=torch.float32)

        def loss_fn(logits, target, weight):
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, pos_weight=pos_weight.to(logits.device), weight=weight
            )

        W = np.ones_like(Y)
        W[:, list(self.constant_)] = 0.0
        self._train(self.build(X.shape[1], Y.shape[1]), loss_fn, Xs, Y, W, coords, groups)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Logits ``(n_spots, n_metabolites)``; > 0 = present."""
        logits = self._forward(self._scale(X)).numpy().astype(np.float64)
        for j, v in self.constant_.items():
            logits[:, j] = CONSTANT_LOGIT if v else -CONSTANT_LOGIT
        return logits

    def predict_proba(self, X) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int8)


class _NeuralRegressor(_TorchEstimator, RegressorMixin):
    """Masked MSE on per-metabolite standardised targets (only present spots count when given)."""

    def fit(self, X, Y, *, presence=None, coords=None, groups=None, **fit_params):

        self._check_common()
        X, Y = check_xy(X, Y)
        Xs = self._fit_scaler(X)
        rows = _presence_rows(presence, Y.shape)
        self.n_outputs_ = Y.shape[1]
        masked = np.where(rows, Y, np.nan)
        self.y_mean_ = np.nanmean(masked, axis=0)
        self.y_scale_ = np.nanstd(masked, axis=0)
        self.y_scale_[~(self.y_scale_ > 1e-12)] = 1.0
        T = (Y - self.y_mean_) / self.y_scale_

        def loss_fn(pred, target, weight):
            return (weight * (pred - target) ** 2).sum() / weight.sum().clamp_min(1.0)

        Z = self._fit_inputs(Xs)
        self._train(self.build(Z.shape[1], Y.shape[1]), loss_fn, Z, T, rows.astype(np.float64), coords, groups)
        return self

    def _fit_inputs(self, Xs: np.ndarray) -> np.ndarray:
        """Network input from the standardised features (fitting any input map); identity here."""
        return Xs

    def _inputs(self, Xs: np.ndarray) -> np.ndarray:
        return Xs

    def predict(self, X) -> np.ndarray:
        """``(n_spots, n_metabolites)`` intensities."""
        out = self._forward(self._inputs(self._scale(X))).numpy().astype(np.float64)
        return out * self.y_scale_ + self.y_mean_


class MLPIntensityRegressor(_MLP, _NeuralRegressor):
    """Stage 2 MLP baseline: expression -> all metabolite intensities.

    Parameters are those of :class:`MLPPresenceClassifier`.
    """

    __init__ = _mlp_init(dropout=0.1)


class TransformerIntensityRegressor(_NeuralRegressor):
    """Stage 2 transformer over gene-module tokens with one learned query per metabolite.

    Attention over one token per gene costs ``O(n_genes^2)`` per spot (300 genes: over 40 min per fold
    on 2 CPU cores; a Visium panel has ~18k genes). Here the tokens are ``n_tokens`` gene modules: the
    leading principal components of the standardised training expression (randomised SVD,
    Halko et al. 2011), each token carrying its module score; projecting costs ``O(n_genes x n_tokens)``
    and attention ``O(n_tokens^2)``, so the cost grows linearly with the number of genes (the same aim as
    the linearised attention of SEQUOIA, Pizurica et al. 2024, reached by compressing the tokens). With
    ``n_tokens >= n_genes`` every principal direction is a token (a rotation of the gene tokens).
    See :class:`spatialclust.translate._nets.GeneTokenTransformer` for the network; :meth:`attention`
    maps the attention of every metabolite query over the modules back to genes through the squared
    loadings.

    Parameters
    ----------
    n_tokens
        Gene modules (tokens); at most the number of input features.
    d_model, n_heads, n_layers
        Token width, attention heads, encoder layers over the tokens.
    dropout, weight_decay, lr, max_epochs, patience, batch_size, validation_fraction, random_state, device
        As in :class:`MLPPresenceClassifier`.

    Attributes
    ----------
    loadings_
        ``(n_features, n_tokens)`` orthonormal module loadings.
    token_scale_
        ``(n_tokens,)`` standard deviation of the module scores on the training spots.
    """

    def __init__(self, n_tokens: int = 32, d_model: int = 32, n_heads: int = 4, n_layers: int = 1, dropout: float = 0.1,
                 weight_decay: float = 1e-3, lr: float = 3e-3, max_epochs: int = 200, patience: int = 20, batch_size: int = 128,
                 validation_fraction: float = 0.2, random_state: int = 0, device: str = "auto") -> None:
        self.n_tokens = n_tokens
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device

    def _fit_inputs(self, Xs: np.ndarray) -> np.ndarray:
        from sklearn.utils.extmath import randomized_svd

        if int(self.n_tokens) != self.n_tokens or self.n_tokens < 1:
            raise ValueError(f"`n_tokens` must be an integer >= 1, got {self.n_tokens!r}.")
        k = int(min(self.n_tokens, Xs.shape[1], Xs.shape[0]))
        if k == Xs.shape[1]:
            _, _, vt = np.linalg.svd(Xs, full_matrices=False)
            vt = vt[:k]
        else:
            _, _, vt = randomized_svd(Xs, k, random_state=self.random_state)
        self.loadings_ = vt.T
        scores = Xs @ self.loadings_
        self.token_scale_ = scores.std(0).clip(1e-6)
        return scores / self.token_scale_

    def _inputs(self, Xs: np.ndarray) -> np.ndarray:
        return Xs @ self.loadings_ / self.token_scale_

    def build(self, n_inputs: int, n_outputs: int):
        from ._nets import GeneTokenTransformer

        if self.d_model % self.n_heads:
            raise ValueError(f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads}).")
        # the network sees the module tokens, not the n_inputs features (also when rebuilt from a checkpoint)
        n_tokens = self.loadings_.shape[1] if hasattr(self, "loadings_") else n_inputs
        return GeneTokenTransformer(n_tokens, n_outputs, d_model=int(self.d_model), n_heads=int(self.n_heads),
                                    n_layers=int(self.n_layers), dropout=self.dropout)

    def attention(self, X) -> np.ndarray:
        """``(n_spots, n_metabolites, n_features)`` attention of each metabolite query, mapped from the
        modules to the input features through the squared loadings (rows sum to 1)."""
        _, weights = self._forward(self._inputs(self._scale(X)), return_attention=True)
        return np.einsum("smk,gk->smg", weights.numpy().astype(np.float64), self.loadings_**2)
