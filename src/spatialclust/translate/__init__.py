"""ST -> MSI translation (seed 004): synthetic spatial metabolomics from spatial transcriptomics.

Pair ST spots with MSI pixels (:func:`pair`), derive presence targets (:func:`presence_targets`) and
signature masks (:class:`SignatureMask`), fit the two-stage model (:class:`TwoStageTranslator`:
presence classifiers, then intensity regressors incl. a transformer over gene-module tokens, combined
per metabolite as a calibrated hurdle expectation, the seed's mask or unmasked, chosen by inner CV),
evaluate on spatial folds (:func:`cross_validate`, :func:`spatial_folds`), interpret
(:func:`gene_importance`, :func:`top_genes`) and generate MSI from new ST (:func:`predict_msi`).
PyTorch is only imported when a neural model is fitted or loaded.
"""

from ._anndata import expression_matrix, grid_coordinates, predict_msi
from ._cv import min_train_test_distance, spatial_blocks, spatial_folds, validation_split
from ._estimators import LinearIntensityRegressor, LinearPresenceClassifier, PrevalencePresence
from ._interpret import gene_importance, top_genes
from ._metrics import intensity_scores, presence_scores
from ._models import create_intensity_model, create_presence_model, list_intensity_models, list_presence_models
from ._neural import MLPIntensityRegressor, MLPPresenceClassifier, TransformerIntensityRegressor
from ._pairing import affine_from_landmarks, concatenate_sections, pair
from ._persist import load_translator, save_translator
from ._calibration import CALIBRATIONS, calibrated_probability, fit_calibration, fit_platt, platt_probability
from ._selection import cross_validate, grid_search, row_name
from ._signatures import SignatureMask
from ._spatial import morans_i, neighbourhood_mean, spatial_features, spot_graph
from ._targets import detection_thresholds, noise_level, presence_targets
from ._two_stage import COMBINATIONS, TwoStageTranslator, absent_levels, choose_combinations, combine_stages, inner_errors

__all__ = [
    "CALIBRATIONS",
    "COMBINATIONS",
    "LinearIntensityRegressor",
    "LinearPresenceClassifier",
    "MLPIntensityRegressor",
    "MLPPresenceClassifier",
    "PrevalencePresence",
    "SignatureMask",
    "TransformerIntensityRegressor",
    "TwoStageTranslator",
    "absent_levels",
    "affine_from_landmarks",
    "calibrated_probability",
    "choose_combinations",
    "combine_stages",
    "concatenate_sections",
    "create_intensity_model",
    "create_presence_model",
    "cross_validate",
    "detection_thresholds",
    "expression_matrix",
    "fit_calibration",
    "fit_platt",
    "gene_importance",
    "grid_coordinates",
    "grid_search",
    "inner_errors",
    "intensity_scores",
    "list_intensity_models",
    "list_presence_models",
    "load_translator",
    "min_train_test_distance",
    "morans_i",
    "neighbourhood_mean",
    "noise_level",
    "pair",
    "platt_probability",
    "predict_msi",
    "presence_scores",
    "presence_targets",
    "row_name",
    "save_translator",
    "spatial_blocks",
    "spatial_features",
    "spatial_folds",
    "spot_graph",
    "top_genes",
    "validation_split",
]
