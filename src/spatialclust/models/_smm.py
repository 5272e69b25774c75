"""Student's t mixture model fitted by MAP-EM (DARLC, Wang et al., 2024, seed 003, §3.3.1).

Each component ``k`` has weight ``pi_k``, mean ``mu_k``, scale matrix ``Sigma_k`` and degrees of
freedom ``nu_k`` (eq. 13). The t density is written as a Gaussian scale mixture with a latent
precision scale ``u ~ Gamma(nu/2, nu/2)`` (eq. 14) so that EM has closed-form updates:

E-step
    ``r_ik`` = posterior membership, ``u_ik = (nu_k + d) / (nu_k + delta_ik)`` (expected scale),
    ``E[log u_ik] = psi((nu_k + d)/2) - log((nu_k + delta_ik)/2)``, with ``delta_ik`` the Mahalanobis
    distance.
M-step (MAP, priors: Dirichlet(alpha) on pi, normal-inverse-Wishart(m0, kappa0, Psi0, nu0) on
(mu_k, Sigma_k), flat on nu_k)
    ``pi_k = (N_k + alpha - 1) / (N + K (alpha - 1))``,
    ``mu_k = (sum_i r_ik u_ik z_i + kappa0 m0) / (S_k + kappa0)``,
    ``Sigma_k = (Psi0 + sum_i r_ik u_ik (z_i - mu_k)(z_i - mu_k)^T + kappa0 (mu_k - m0)(mu_k - m0)^T)
    / (N_k + nu0 + d + 2)``, and ``nu_k`` the root of
    ``log(nu/2) + 1 - psi(nu/2) + (1/N_k) sum_i r_ik (E[log u_ik] - u_ik) = 0`` (an ECM step),
    with ``N_k = sum_i r_ik``, ``S_k = sum_i r_ik u_ik``.

Every step maximises the expected complete-data log posterior (eq. 15), so the log posterior
``sum_i log p(z_i | theta) + log p(theta)`` never decreases (:attr:`StudentMixture.objective_`).
``distribution="gaussian"`` fixes ``u = 1`` (``nu = inf``): the MAP Gaussian mixture of the
"SMM -> GMM" ablation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import digamma, logsumexp
from sklearn.base import BaseEstimator, ClusterMixin

from .._logging import logger
from .._registry import invalid_option

__all__ = ["DISTRIBUTIONS", "StudentMixture", "t_log_density", "t_mixture_log_prob"]

DISTRIBUTIONS = ("t", "gaussian")
_NU_BOUNDS = (0.5, 200.0)


def _t_log_kernel(maha: Any, logdet: Any, d: int, dof: float, log1p: Callable[[Any], Any]) -> Any:
    """``log t(z | mu, Sigma, nu)`` from the Mahalanobis distances ``maha`` and ``log |Sigma|``
    (``dof = inf``: Gaussian); one formula for numpy arrays (EM) and torch tensors (DARLC's losses)."""
    if math.isinf(dof):
        return -0.5 * (d * math.log(2 * math.pi) + logdet + maha)
    return (
        math.lgamma((dof + d) / 2) - math.lgamma(dof / 2) - 0.5 * d * math.log(dof * math.pi) - 0.5 * logdet
        - 0.5 * (dof + d) * log1p(maha / dof)
    )


def t_log_density(x: np.ndarray, mean: np.ndarray, chol: np.ndarray, dof: float) -> tuple[np.ndarray, np.ndarray]:
    """Log density of a multivariate t (``dof = inf``: Gaussian) and the Mahalanobis distances.

    ``chol`` is the lower Cholesky factor of the scale matrix.
    """
    sol = np.linalg.solve(chol, (x - mean).T)
    maha = np.sum(sol**2, axis=0)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    return _t_log_kernel(maha, logdet, x.shape[1], float(dof), np.log1p), maha


def t_mixture_log_prob(z: Any, means: Any, chols: Any, dofs: Any, log_weights: Any) -> Any:
    """Per-component ``log pi_k + log t(z | mu_k, Sigma_k, nu_k)`` ``(B, K)`` of torch tensors,
    differentiable in ``z`` (DARLC's Module II losses, eqs. 18-21).

    Parameters
    ----------
    z
        Embeddings ``(B, d)``.
    means, chols
        Component means ``(K, d)`` and lower Cholesky factors of the scale matrices ``(K, d, d)``.
    dofs
        Degrees of freedom ``(K,)`` (``inf``: Gaussian component), as numbers.
    log_weights
        Log mixture weights ``(K,)``.
    """
    import torch

    d = z.shape[1]
    cols = []
    for k in range(means.shape[0]):
        sol = torch.linalg.solve_triangular(chols[k], (z - means[k]).T, upper=False)
        maha = (sol**2).sum(dim=0)
        logdet = 2.0 * torch.log(torch.diagonal(chols[k])).sum()
        cols.append(_t_log_kernel(maha, logdet, d, float(dofs[k]), torch.log1p) + log_weights[k])
    return torch.stack(cols, dim=1)


class StudentMixture(BaseEstimator, ClusterMixin):
    """Student's t (or Gaussian) mixture model with Dirichlet and normal-inverse-Wishart priors.

    Parameters
    ----------
    n_components
        Number of mixture components (clusters).
    distribution
        ``"t"`` (SMM, the paper's choice) or ``"gaussian"`` (GMM ablation).
    max_iter, tol
        EM stops after ``max_iter`` iterations or when the log posterior per sample increases by
        less than ``tol``.
    weight_concentration_prior
        Symmetric Dirichlet concentration ``alpha`` (>= 1; 1 = no prior on the weights).
    mean_precision_prior
        ``kappa0``: pseudo-count of the prior on the means (prior mean ``m0`` = data mean).
    covariance_prior_scale
        ``Psi0 = covariance_prior_scale * nu0 * diag(data variance) / n_components**(2/d)``:
        the prior scale matrix shrinks every component towards an isotropic share of the data.
    degrees_of_freedom_prior
        ``nu0`` of the inverse-Wishart prior (None: ``d + 2``).
    dof_init
        Initial degrees of freedom of every component.
    fix_dof
        Keep ``nu`` at ``dof_init`` (no ECM update).
    init
        ``"kmeans"`` (k-means++ centres, hard assignment) or an array of initial labels.
    reg_covar
        Added to the covariance diagonal for numerical stability.
    random_state
        Seed for the k-means initialisation.

    Attributes
    ----------
    weights_, means_, covariances_, dof_
        Fitted parameters (``dof_`` is ``inf`` for the Gaussian mixture).
    objective_
        Log posterior (up to a constant) after every EM iteration; non-decreasing.
    labels_
        MAP component of each training sample.
    n_iter_, converged_
    """

    def __init__(
        self,
        n_components: int = 8,
        *,
        distribution: str = "t",
        max_iter: int = 100,
        tol: float = 1e-5,
        weight_concentration_prior: float = 2.0,
        mean_precision_prior: float = 0.01,
        covariance_prior_scale: float = 0.1,
        degrees_of_freedom_prior: float | None = None,
        dof_init: float = 10.0,
        fix_dof: bool = False,
        init: str | np.ndarray = "kmeans",
        reg_covar: float = 1e-6,
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.distribution = distribution
        self.max_iter = max_iter
        self.tol = tol
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.covariance_prior_scale = covariance_prior_scale
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.dof_init = dof_init
        self.fix_dof = fix_dof
        self.init = init
        self.reg_covar = reg_covar
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _validate(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"`X` must be a 2-D array (n_samples, n_features); received shape {X.shape}.")
        if not np.isfinite(X).all():
            raise ValueError("`X` contains NaN or infinite values.")
        if self.distribution not in DISTRIBUTIONS:
            raise invalid_option(self.distribution, "distribution", DISTRIBUTIONS)
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"`n_components` must be a positive integer; received {self.n_components!r}.")
        if X.shape[0] < self.n_components:
            raise ValueError(f"`n_components`={self.n_components} exceeds the number of samples ({X.shape[0]}).")
        if self.weight_concentration_prior < 1:
            raise ValueError(f"`weight_concentration_prior` must be >= 1 (MAP of a Dirichlet); received {self.weight_concentration_prior!r}.")
        if self.mean_precision_prior <= 0 or self.covariance_prior_scale <= 0:
            raise ValueError("`mean_precision_prior` and `covariance_prior_scale` must be positive.")
        if not _NU_BOUNDS[0] <= self.dof_init <= _NU_BOUNDS[1]:
            raise ValueError(f"`dof_init` must be in {list(_NU_BOUNDS)}; received {self.dof_init!r}.")
        return X

    # ------------------------------------------------------------------ priors
    def _set_priors(self, X: np.ndarray) -> None:
        n, d = X.shape
        self.mean_prior_ = X.mean(axis=0)
        self.dof_prior_ = float(self.degrees_of_freedom_prior if self.degrees_of_freedom_prior is not None else d + 2)
        var = X.var(axis=0) + self.reg_covar
        self.covariance_prior_ = np.diag(self.covariance_prior_scale * self.dof_prior_ * var / self.n_components ** (2.0 / d))

    def _log_prior(self) -> float:
        """log Dirichlet(pi | alpha) + sum_k log NIW(mu_k, Sigma_k), up to additive constants."""
        alpha, kappa0, nu0 = self.weight_concentration_prior, self.mean_precision_prior, self.dof_prior_
        d = self.means_.shape[1]
        lp = (alpha - 1.0) * np.sum(np.log(self.weights_))
        for k in range(self.n_components):
            chol = self._chol[k]
            logdet = 2.0 * np.sum(np.log(np.diag(chol)))
            inv = np.linalg.inv(self.covariances_[k])
            diff = self.means_[k] - self.mean_prior_
            lp += -0.5 * logdet - 0.5 * kappa0 * diff @ inv @ diff  # normal on the mean
            lp += -0.5 * (nu0 + d + 1) * logdet - 0.5 * np.trace(self.covariance_prior_ @ inv)  # inverse Wishart
        return float(lp)

    # ------------------------------------------------------------------ EM
    def _component_logpdf(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logp = np.empty((X.shape[0], self.n_components))
        maha = np.empty_like(logp)
        for k in range(self.n_components):
            logp[:, k], maha[:, k] = t_log_density(X, self.means_[k], self._chol[k], self.dof_[k])
        return logp, maha

    def _e_step(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        logp, maha = self._component_logpdf(X)
        weighted = logp + np.log(self.weights_)
        norm = logsumexp(weighted, axis=1)
        resp = np.exp(weighted - norm[:, None])
        d = X.shape[1]
        if self.distribution == "gaussian":
            u = np.ones_like(maha)
            elog_u = np.zeros_like(maha)
        else:
            u = (self.dof_ + d) / (self.dof_ + maha)
            elog_u = digamma((self.dof_ + d) / 2) - np.log((self.dof_ + maha) / 2)
        return resp, u, elog_u, float(norm.sum())

    def _m_step(self, X: np.ndarray, resp: np.ndarray, u: np.ndarray, elog_u: np.ndarray) -> None:
        n, d = X.shape
        alpha, kappa0, nu0 = self.weight_concentration_prior, self.mean_precision_prior, self.dof_prior_
        nk = resp.sum(axis=0) + 10 * np.finfo(float).eps
        self.weights_ = (nk + alpha - 1.0) / (n + self.n_components * (alpha - 1.0))
        w = resp * u
        sk = w.sum(axis=0)
        for k in range(self.n_components):
            mean = (w[:, k] @ X + kappa0 * self.mean_prior_) / (sk[k] + kappa0)
            diff = X - mean
            scatter = (w[:, k, None] * diff).T @ diff
            dm = (mean - self.mean_prior_)[:, None]
            cov = (self.covariance_prior_ + scatter + kappa0 * dm @ dm.T) / (nk[k] + nu0 + d + 2)
            cov.flat[:: d + 1] += self.reg_covar
            self.means_[k], self.covariances_[k] = mean, cov
            if self.distribution == "t" and not self.fix_dof:
                const = 1.0 + np.sum(resp[:, k] * (elog_u[:, k] - u[:, k])) / nk[k]
                self.dof_[k] = _solve_dof(const)
        self._chol = np.linalg.cholesky(self.covariances_)

    def _initialise(self, X: np.ndarray) -> None:
        n, d = X.shape
        if isinstance(self.init, str):
            if self.init != "kmeans":
                raise invalid_option(self.init, "init", ["kmeans", "<array of labels>"])
            from sklearn.cluster import KMeans

            labels = KMeans(self.n_components, n_init=3, random_state=self.random_state).fit_predict(X)
        else:
            labels = np.asarray(self.init)
            if labels.shape != (n,) or labels.min() < 0 or labels.max() >= self.n_components:
                raise ValueError(f"`init` labels must be integers in [0, {self.n_components}) of shape ({n},).")
        resp = np.zeros((n, self.n_components))
        resp[np.arange(n), labels] = 1.0
        self.means_ = np.zeros((self.n_components, d))
        self.covariances_ = np.zeros((self.n_components, d, d))
        self.dof_ = np.full(self.n_components, np.inf if self.distribution == "gaussian" else float(self.dof_init))
        dof = self.dof_.copy()  # the first M-step from hard labels (u = 1) keeps the initial nu
        self._m_step(X, resp, np.ones_like(resp), np.zeros_like(resp))
        self.dof_ = dof

    def fit(self, X: np.ndarray, y: None = None) -> StudentMixture:
        """Estimate the parameters by MAP-EM; records the log posterior after every iteration."""
        X = self._validate(X)
        self._set_priors(X)
        self._initialise(X)
        self.objective_ = []
        self.converged_ = False
        previous = -np.inf
        for it in range(1, self.max_iter + 1):
            resp, u, elog_u, _ = self._e_step(X)
            self._m_step(X, resp, u, elog_u)
            objective = self.score(X) * X.shape[0] + self._log_prior()
            self.objective_.append(objective)
            self.n_iter_ = it
            if abs(objective - previous) < self.tol * X.shape[0]:
                self.converged_ = True
                break
            previous = objective
        if not self.converged_:
            logger.info("StudentMixture did not converge in %d iterations (last change %.3g).", self.max_iter, objective - previous)
        self.labels_ = self.predict(X)
        return self

    def warm_start(self, X: np.ndarray, *, n_iter: int = 10) -> StudentMixture:
        """Continue EM from the current parameters on new data ``X`` (used once per DARLC epoch)."""
        X = self._validate(X)
        self._set_priors(X)
        for _ in range(n_iter):
            resp, u, elog_u, _ = self._e_step(X)
            self._m_step(X, resp, u, elog_u)
        self.labels_ = self.predict(X)
        return self

    @classmethod
    def from_parameters(cls, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, dof: np.ndarray, *,
                        distribution: str = "t", labels: np.ndarray | None = None) -> StudentMixture:
        """A fitted mixture from stored parameters (e.g. a DARLC checkpoint), ready to predict."""
        mixture = cls(len(weights), distribution=distribution)
        mixture.weights_, mixture.means_ = np.asarray(weights, np.float64), np.asarray(means, np.float64)
        mixture.covariances_, mixture.dof_ = np.asarray(covariances, np.float64), np.asarray(dof, np.float64)
        mixture._chol = np.linalg.cholesky(mixture.covariances_)
        if labels is not None:
            mixture.labels_ = np.asarray(labels, dtype=np.int64)
        return mixture

    def _check_fitted(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "means_"):
            raise RuntimeError("This StudentMixture is not fitted yet; call `fit` first.")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.means_.shape[1]:
            raise ValueError(f"`X` must have shape (n, {self.means_.shape[1]}); received {X.shape}.")
        return X

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Log likelihood ``log sum_k pi_k t(x | theta_k)`` of every sample (eq. 18)."""
        X = self._check_fitted(X)
        logp, _ = self._component_logpdf(X)
        return logsumexp(logp + np.log(self.weights_), axis=1)

    def score(self, X: np.ndarray, y: None = None) -> float:
        """Mean log likelihood per sample."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Posterior membership probabilities ``(n, n_components)``."""
        X = self._check_fitted(X)
        resp, *_ = self._e_step(X)
        return resp

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable component of every sample."""
        return self.predict_proba(X).argmax(axis=1)


def _solve_dof(const: float) -> float:
    """Root in nu of ``log(nu/2) - psi(nu/2) + const = 0`` (clipped to the allowed range)."""

    def f(nu: float) -> float:
        return np.log(nu / 2) - digamma(nu / 2) + const

    lo, hi = _NU_BOUNDS
    if f(lo) <= 0:
        return lo
    if f(hi) >= 0:
        return hi
    return float(brentq(f, lo, hi, xtol=1e-6))
