"""Deep-learning parts (PyTorch): backbones, heads, losses, augmentations, checkpoints, GAT and
Gaussian smoothing, ViT/MAE, the Student's t mixture, DINO, and the generic torch helpers.

Importing this package imports torch; the tools (``tl``, ``translate``) import it inside the
functions that train or run a network, so ``import spatialclust`` stays free of torch. Every name
other packages use is public here; code outside ``models`` never imports its private modules.
"""

from ._backbones import (
    Backbone,
    BackboneConfig,
    WeightsError,
    backbones,
    create_backbone,
    efficientnet_lite0_state_dict,
    list_backbones,
    load_state_dict_file,
    register_backbone,
)
from ._checkpoint import (
    CheckpointError,
    check_checkpoint_path,
    is_checkpoint,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
)
from ._dino import CELL_SCALINGS, DINOTrainer, channel_reference, scale_cell_images
from ._gat import gat_smooth, gaussian_smooth, pixel_graph
from ._heads import ClassificationHead, DINOHead, EncoderClassifier, ProjectionHead, SimCLRModel
from ._losses import ConfidenceBasedCrossEntropy, DINOLoss, InfoNCELoss, NTXentLoss
from ._smm import DISTRIBUTIONS, StudentMixture, t_log_density, t_mixture_log_prob
from ._torch import autocast_context, channels_last, ema_update, encode, optimizer_step, torch_threads
from ._transforms import (
    AUGMENTATION_STRENGTHS,
    Compose,
    IonImageTransform,
    MaskOffTissue,
    MultiCropTransform,
    MultiViewTransform,
    RandomCountThinning,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomIntensityDistortion,
    RandomResizedCrop,
    RandomRotation,
    RandomTranslation,
    augmentation_strength,
    ion_image_transform,
    self_labeling_views,
    simclr_views,
)
from ._vit import SparseImageViT, adapt_patch_embedding, channel_vit, sincos_pos_embed

__all__: list[str] = [
    "AUGMENTATION_STRENGTHS",
    "Backbone",
    "BackboneConfig",
    "CELL_SCALINGS",
    "CheckpointError",
    "ClassificationHead",
    "Compose",
    "ConfidenceBasedCrossEntropy",
    "DINOHead",
    "DINOLoss",
    "DINOTrainer",
    "DISTRIBUTIONS",
    "EncoderClassifier",
    "InfoNCELoss",
    "IonImageTransform",
    "MaskOffTissue",
    "MultiCropTransform",
    "MultiViewTransform",
    "NTXentLoss",
    "ProjectionHead",
    "RandomCountThinning",
    "RandomGamma",
    "RandomGaussianBlur",
    "RandomGaussianNoise",
    "RandomIntensityDistortion",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomTranslation",
    "SimCLRModel",
    "SparseImageViT",
    "StudentMixture",
    "WeightsError",
    "adapt_patch_embedding",
    "augmentation_strength",
    "autocast_context",
    "backbones",
    "channel_reference",
    "channel_vit",
    "channels_last",
    "check_checkpoint_path",
    "create_backbone",
    "efficientnet_lite0_state_dict",
    "ema_update",
    "encode",
    "gat_smooth",
    "gaussian_smooth",
    "ion_image_transform",
    "is_checkpoint",
    "list_backbones",
    "load_checkpoint",
    "load_optimizer_state",
    "load_state_dict_file",
    "optimizer_step",
    "pixel_graph",
    "register_backbone",
    "save_checkpoint",
    "scale_cell_images",
    "self_labeling_views",
    "simclr_views",
    "sincos_pos_embed",
    "t_log_density",
    "t_mixture_log_prob",
    "torch_threads",
]
