"""Ion-image augmentations and multi-view transforms for self-supervised training.

Hu et al. (2022, Chem. Sci. 13, 90; seed 001) found that *appearance-changing* augmentations
(Gaussian blur, Gaussian noise, intensity distortion) are what make contrastive learning work on
ion images, while strong *geometric* changes hurt (only mild rotation helped a little). The
appearance set is therefore on by default; rotation, translation and resized crop are optional and
off by default.

All transforms work on a batch of grayscale images ``(B, H, W)`` with values in [0, 1] (on any
device) and draw independent random parameters for every image from an explicit
``torch.Generator``, so augmentation is fast on a CPU (one vectorised call per batch), runs on the
GPU next to the model and is reproducible. A multi-view transform returns a list of views
(lightly style): two views of the same kind for SimCLR, a weak and a strong view for self-labeling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

# the strengths are plain data, checked by the embedders' constraints without importing torch
from .._validation import AUGMENTATION_STRENGTHS, Interval, augmentation_strength, check_probability, check_range, validate_params

__all__ = [
    "AUGMENTATION_STRENGTHS",
    "Compose",
    "IonImageTransform",
    "MaskOffTissue",
    "MultiCropTransform",
    "MultiViewTransform",
    "RandomGaussianBlur",
    "RandomGaussianNoise",
    "RandomCountThinning",
    "RandomGamma",
    "RandomIntensityDistortion",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomTranslation",
    "augmentation_strength",
    "ion_image_transform",
    "self_labeling_views",
    "simclr_views",
]

def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


class IonImageTransform(nn.Module):
    """Base of the random ion-image transforms: applied to each image with probability ``p``.

    Subclasses implement :meth:`apply` for the images selected in the batch.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_probability(p)

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform a batch ``(B, H, W)`` in [0, 1]; each image is changed with probability ``p``."""
        if images.ndim != 3:
            raise ValueError(f"Transforms take a batch of images (B, H, W); received shape {tuple(images.shape)}.")
        selected = (torch.rand(images.shape[0], generator=generator) < self.p).to(images.device)
        params = self.sample(images, generator)
        if not bool(selected.any()):
            return images
        out = self.apply(images, params)
        return torch.where(selected[:, None, None], out, images)

    def sample(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random parameters of every image in the batch (drawn for all, so the stream is fixed)."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Transform all images of the batch with their parameters."""
        raise NotImplementedError


class RandomGaussianBlur(IonImageTransform):
    """Gaussian blur with a random standard deviation per image (separable, reflect padding).

    Parameters
    ----------
    sigma
        Range of the blur standard deviation in pixels.
    p
        Probability of blurring an image.
    """

    def __init__(self, sigma: Sequence[float] = (0.1, 2.0), *, p: float = 0.5) -> None:
        super().__init__(p)
        self.sigma = check_range(sigma, "sigma")
        if self.sigma[1] <= 0:
            raise ValueError(f"`sigma` must allow a positive blur; received {sigma!r}.")

    def sample(self, images, generator):
        return _uniform(images.shape[0], *self.sigma, generator, images.device).clamp_min(1e-3)

    def apply(self, images, params):
        # separable blur as two batched matrix products with per-image banded (reflect-padded)
        # blur matrices: much faster on a CPU than a grouped convolution with one group per image
        radius = max(1, math.ceil(3 * self.sigma[1]))
        offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
        kernel = torch.exp(-0.5 * (offsets[None, :] / params[:, None].to(images.dtype)) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        rows = self._blur_matrix(kernel, images.shape[1], radius)
        cols = rows if images.shape[2] == images.shape[1] else self._blur_matrix(kernel, images.shape[2], radius)
        return rows @ images @ cols.transpose(1, 2)

    @staticmethod
    def _blur_matrix(kernel: torch.Tensor, size: int, radius: int) -> torch.Tensor:
        """``(B, size, size)`` matrices applying each image's 1-D kernel with reflect boundaries."""
        b = kernel.shape[0]
        pos = torch.arange(size, device=kernel.device)[:, None] + torch.arange(-radius, radius + 1, device=kernel.device)[None, :]
        period = max(2 * (size - 1), 1)
        pos = pos.remainder(period)
        pos = torch.where(pos >= size, period - pos, pos)  # reflect (no edge repeat), any radius
        matrix = torch.zeros(b, size, size, device=kernel.device, dtype=kernel.dtype)
        index = pos[None].expand(b, -1, -1)
        return matrix.scatter_add_(2, index, kernel[:, None, :].expand(-1, size, -1))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, p={self.p}"


class RandomGaussianNoise(IonImageTransform):
    """Additive Gaussian noise whose magnitude adapts to the image's signal level, clipped to [0, 1].

    As in the authors' implementation the noise standard deviation is ``sigma`` times the mean of
    the image's bright pixels (> 0.1) relative to 0.6, the level of a homogeneous ion image, so that
    dim and bright ion images get comparable relative noise.

    Parameters
    ----------
    sigma
        Range of the (relative) noise standard deviation.
    p
        Probability of adding noise to an image.
    """

    reference_level = 0.6
    bright_threshold = 0.1

    def __init__(self, sigma: Sequence[float] = (0.001, 0.2), *, p: float = 0.5) -> None:
        super().__init__(p)
        self.sigma = check_range(sigma, "sigma")

    def sample(self, images, generator):
        std = _uniform(images.shape[0], *self.sigma, generator, images.device)
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        return std[:, None, None] * noise

    def apply(self, images, params):
        bright = images > self.bright_threshold
        n_bright = bright.sum(dim=(1, 2))
        level = torch.where(
            n_bright > 0,
            (images * bright).sum(dim=(1, 2)) / n_bright.clamp_min(1),
            images.mean(dim=(1, 2)),
        )
        return (images + params * (level / self.reference_level)[:, None, None]).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, p={self.p}"


class RandomCountThinning(IonImageTransform):
    """Resample an image as if it had been acquired with fewer ion counts (Poisson), rescaled to [0, 1].

    The nuisance that separates an ion image from a weaker ion of the same pattern (an isotope
    partner, a low-abundance molecule): ``y = Poisson(c x) / c`` with ``c`` counts at the image's
    maximum, drawn log-uniformly from ``counts``, then divided by its maximum. Not in the authors'
    code; see docs/benchmarks.md for what it buys on the realistic simulator.

    Parameters
    ----------
    counts
        Range of the counts at the image maximum (low = strong thinning).
    p
        Probability of thinning an image.
    """

    def __init__(self, counts: Sequence[float] = (3.0, 100.0), *, p: float = 0.5) -> None:
        super().__init__(p)
        self.counts = check_range(counts, "counts", low=1e-3)

    def sample(self, images, generator):
        low, high = math.log(self.counts[0]), math.log(self.counts[1])
        level = torch.exp(_uniform(images.shape[0], low, high, generator, images.device))[:, None, None]
        images = images.clamp_min(0)  # images of any scale: c counts at each image's own maximum
        top = images.amax(dim=(1, 2), keepdim=True)
        images = images / torch.where(top > 0, top, torch.ones_like(top))
        draws = torch.poisson((images * level).cpu(), generator=generator).to(images.device)
        return torch.stack([draws / level, level.expand_as(images)])

    def apply(self, images, params):
        thinned, level = params[0], params[1]
        top = thinned.amax(dim=(1, 2), keepdim=True).clamp_min(1.0 / level[:, :1, :1])
        return (thinned / top).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"counts={self.counts}, p={self.p}"


class RandomGamma(IonImageTransform):
    """Random contrast curve ``x ** g`` with ``log g`` uniform in ``log(gamma)`` (per-ion contrast).

    Not in the authors' code (their ``ColorJitter`` only changes contrast linearly).

    Parameters
    ----------
    gamma
        Range of the exponent.
    p
        Probability of changing an image.
    """

    def __init__(self, gamma: Sequence[float] = (0.5, 2.0), *, p: float = 0.5) -> None:
        super().__init__(p)
        self.gamma = check_range(gamma, "gamma", low=1e-3)

    def sample(self, images, generator):
        low, high = math.log(self.gamma[0]), math.log(self.gamma[1])
        return torch.exp(_uniform(images.shape[0], low, high, generator, images.device))

    def apply(self, images, params):
        return images.clamp(0.0, 1.0) ** params[:, None, None].to(images.dtype)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, p={self.p}"


class RandomIntensityDistortion(IonImageTransform):
    """Random brightness and contrast change (``ColorJitter`` of a gray image), clipped to [0, 1].

    ``x <- clip((b x - m) c + m)`` with ``b, c ~ U(1 - strength, 1 + strength)`` and ``m`` the mean
    of ``b x``.

    Parameters
    ----------
    strength
        Maximum relative change of brightness and contrast, in [0, 1).
    p
        Probability of distorting an image.
    """

    def __init__(self, strength: float = 0.5, *, p: float = 0.5) -> None:
        super().__init__(p)
        validate_params({"strength": strength}, {"strength": [Interval(float, 0, 1, closed="left")]})
        self.strength = float(strength)

    def sample(self, images, generator):
        s = self.strength
        return _uniform(2 * images.shape[0], 1 - s, 1 + s, generator, images.device).view(2, -1)

    def apply(self, images, params):
        brightness, contrast = params[0][:, None, None], params[1][:, None, None]
        x = images * brightness
        mean = x.mean(dim=(1, 2), keepdim=True)
        return ((x - mean) * contrast + mean).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, p={self.p}"


class _RandomAffine(IonImageTransform):
    """Geometric transforms as one affine resampling per image (bilinear, zero fill)."""

    def apply(self, images, params):
        grid = F.affine_grid(params.to(images.dtype), [images.shape[0], 1, *images.shape[1:]], align_corners=False)
        return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


class RandomRotation(_RandomAffine):
    """Rotation by a random angle in ``[-degrees, degrees]`` (paper: mild, 15 degrees).

    Parameters
    ----------
    degrees
        Largest rotation angle.
    p
        Probability of rotating an image.
    """

    def __init__(self, degrees: float = 15.0, *, p: float = 0.5) -> None:
        super().__init__(p)
        validate_params({"degrees": degrees}, {"degrees": [Interval(float, 0, 180, closed="right")]})
        self.degrees = float(degrees)

    def sample(self, images, generator):
        angle = _uniform(images.shape[0], -self.degrees, self.degrees, generator, images.device) * math.pi / 180
        cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
        return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, p={self.p}"


class RandomTranslation(_RandomAffine):
    """Shift by up to ``max_shift`` of the image side in x and y (zero fill).

    Parameters
    ----------
    max_shift
        Largest shift as a fraction of the image side (paper: a few pixels of padding).
    p
        Probability of shifting an image.
    """

    def __init__(self, max_shift: float = 0.05, *, p: float = 0.5) -> None:
        super().__init__(p)
        validate_params({"max_shift": max_shift}, {"max_shift": [Interval(float, 0, 1, closed="neither")]})
        self.max_shift = float(max_shift)

    def sample(self, images, generator):
        b = images.shape[0]
        shift = _uniform(2 * b, -2 * self.max_shift, 2 * self.max_shift, generator, images.device).view(2, b)
        one, zero = torch.ones(b, device=images.device), torch.zeros(b, device=images.device)
        return torch.stack([torch.stack([one, zero, shift[0]], 1), torch.stack([zero, one, shift[1]], 1)], 1)

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}, p={self.p}"


class RandomResizedCrop(_RandomAffine):
    """Crop a random region (area fraction ``scale``, aspect ``ratio``) and resize it to the full image.

    Parameters
    ----------
    scale
        Range of the crop area as a fraction of the image (paper: 0.8-0.9).
    ratio
        Range of the crop aspect ratio.
    p
        Probability of cropping an image.
    """

    def __init__(self, scale: Sequence[float] = (0.8, 0.9), ratio: Sequence[float] = (0.9, 1.1), *, p: float = 0.5) -> None:
        super().__init__(p)
        self.scale = check_range(scale, "scale", low=1e-3)
        if self.scale[1] > 1:
            raise ValueError(f"`scale` must lie in (0, 1]; received {scale!r}.")
        self.ratio = check_range(ratio, "ratio", low=1e-3)

    def sample(self, images, generator):
        b, dev = images.shape[0], images.device
        area = _uniform(b, *self.scale, generator, dev)
        log_ratio = _uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), generator, dev)
        ratio = torch.exp(log_ratio)
        width = torch.sqrt(area * ratio).clamp(max=1.0)
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(b, generator=generator).to(dev) * 2 - 1) * (1 - width)
        cy = (torch.rand(b, generator=generator).to(dev) * 2 - 1) * (1 - height)
        zero = torch.zeros(b, device=dev)
        return torch.stack([torch.stack([width, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, ratio={self.ratio}, p={self.p}"


class MaskOffTissue(nn.Module):
    """Set pixels outside the tissue mask to 0 after augmentation (noise must not appear off tissue).

    Parameters
    ----------
    mask
        Bool tissue mask ``(H, W)``.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.bool))

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if tuple(images.shape[1:]) != tuple(self.mask.shape):
            raise ValueError(f"`mask` has shape {tuple(self.mask.shape)} but the images are {tuple(images.shape[1:])}.")
        return images * self.mask.to(images.device)


class Compose(nn.Module):
    """Apply transforms in order, passing the generator on.

    Parameters
    ----------
    transforms
        Transforms taking ``(images, *, generator)``.
    """

    def __init__(self, transforms: Sequence[nn.Module]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        for transform in self.transforms:
            images = transform(images, generator=generator)
        return images


class MultiViewTransform(nn.Module):
    """Return one view of the batch per transform (lightly's ``MultiViewTransform``).

    Parameters
    ----------
    transforms
        One transform per view.
    """

    def __init__(self, transforms: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(transforms) < 1:
            raise ValueError("`transforms` must hold at least one transform.")
        self.transforms = nn.ModuleList(transforms)

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        return [transform(images, generator=generator) for transform in self.transforms]


def ion_image_transform(
    strength: str | Mapping[str, object] = "medium",
    *,
    blur: bool = True,
    noise: bool = True,
    intensity: bool = True,
    rotation: float = 0.0,
    translation: float = 0.0,
    resized_crop: bool = False,
    mask: torch.Tensor | None = None,
) -> Compose:
    """The ion-image augmentation pipeline of Hu et al. (2022).

    Parameters
    ----------
    strength
        ``"weak"``, ``"medium"`` (the SimCLR view) or ``"strong"`` (see :data:`AUGMENTATION_STRENGTHS`),
        or a mapping of those parameters (:func:`augmentation_strength`).
    blur, noise, intensity
        Switch the appearance-changing augmentations (all on in the paper).
    rotation
        Largest rotation angle in degrees; 0 = off (default). The paper found mild rotation harmless.
    translation
        Largest shift as a fraction of the image side; 0 = off (default).
    resized_crop
        Random resized crop (area 0.8-0.9); off by default (it reduced accuracy in the paper).
    mask
        Tissue mask ``(H, W)``: off-tissue pixels are zeroed after augmentation.

    Returns
    -------
    A :class:`Compose` mapping a batch ``(B, H, W)`` in [0, 1] to an augmented batch, in the order
    of the authors' code: geometric transforms, blur, intensity, noise, mask.
    """
    cfg = augmentation_strength(strength)
    p = float(cfg["p"])  # type: ignore[arg-type]
    steps: list[nn.Module] = []
    if rotation:
        steps.append(RandomRotation(rotation, p=p))
    if translation:
        steps.append(RandomTranslation(translation, p=p))
    if resized_crop:
        steps.append(RandomResizedCrop(p=p))
    if cfg.get("counts") is not None:
        steps.append(RandomCountThinning(cfg["counts"], p=p))  # type: ignore[arg-type]
    if cfg.get("gamma") is not None:
        steps.append(RandomGamma(cfg["gamma"], p=p))  # type: ignore[arg-type]
    if blur:
        steps.append(RandomGaussianBlur(cfg["blur_sigma"], p=p))  # type: ignore[arg-type]
    if intensity:
        steps.append(RandomIntensityDistortion(cfg["intensity"], p=p))  # type: ignore[arg-type]
    if noise:
        steps.append(RandomGaussianNoise(cfg["noise_sigma"], p=p))  # type: ignore[arg-type]
    if mask is not None:
        steps.append(MaskOffTissue(mask))
    return Compose(steps)


def simclr_views(**kwargs: object) -> MultiViewTransform:
    """Two independently augmented views per image for SimCLR (arguments of :func:`ion_image_transform`)."""
    transform = ion_image_transform(**kwargs)  # type: ignore[arg-type]
    return MultiViewTransform([transform, transform])


def self_labeling_views(
    weak: str | Mapping[str, object] = "weak", strong: str | Mapping[str, object] = "strong", **kwargs: object
) -> MultiViewTransform:
    """A weak and a strong view per image for self-labeling (the authors' ``trans_weak``/``trans_strong``).

    ``kwargs`` are the other arguments of :func:`ion_image_transform`.
    """
    return MultiViewTransform(
        [ion_image_transform(weak, **kwargs), ion_image_transform(strong, **kwargs)]  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------------------------
# multi-crop views of multichannel cell images (DINO)


class MultiCropTransform(nn.Module):
    """DINO multi-crop for ``(B, C, H, W)`` cell images in [0, 1]: 2 global + ``n_local_crops`` local crops.

    Every crop is a random resized crop (area fraction ``global_scale`` / ``local_scale``, aspect
    3/4-4/3) with a random rotation (any angle: cells have no orientation) and flip, resampled
    bilinearly to ``global_size`` / ``local_size``; the same geometry is applied to all channels
    of a cell. Appearance changes are those suited to fluorescence (per channel): brightness and
    contrast jitter, Gaussian blur (p = 1.0 / 0.1 for the two global crops, 0.5 for local crops as
    in DINO) and Gaussian noise. DINO's colour jitter, grey-scale and solarisation are RGB-specific
    and not used.

    Parameters
    ----------
    global_size, local_size
        Output sides (pixels) of global and local crops.
    n_local_crops
        Number of local crops (paper 8 at 96 px for 224 px global crops; fewer for small images).
    global_scale, local_scale
        Crop area ranges (paper (0.4, 1) and (0.05, 0.4)).
    intensity_jitter
        Maximum relative brightness/contrast change (0: none). Brightness jitter teaches the network
        to ignore how bright a cell is, which is wrong when brightness is the phenotype (DNA content).
    """

    def __init__(
        self, global_size: int = 32, local_size: int = 16, *, n_local_crops: int = 4,
        global_scale: Sequence[float] = (0.4, 1.0), local_scale: Sequence[float] = (0.05, 0.4),
        intensity_jitter: float = 0.4,
    ) -> None:
        super().__init__()
        if n_local_crops < 0:
            raise ValueError(f"`n_local_crops` must be >= 0, got {n_local_crops}.")
        for name, scale in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0 < scale[0] <= scale[1] <= 1:
                raise ValueError(f"`{name}` must be (low, high) with 0 < low <= high <= 1, got {scale!r}.")
        self.global_size, self.local_size = int(global_size), int(local_size)
        self.n_local_crops = int(n_local_crops)
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.intensity = RandomIntensityDistortion(intensity_jitter, p=0.8 if intensity_jitter > 0 else 0.0)
        self.blurs = nn.ModuleList([RandomGaussianBlur((0.1, 1.5), p=p) for p in (1.0, 0.1, 0.5)])
        self.noise = RandomGaussianNoise((0.001, 0.1), p=0.5)

    def _crop(self, images: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
        b, dev = images.shape[0], images.device

        def uniform(low: float, high: float) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * (high - low) + low).to(dev)

        area = uniform(*scale)
        ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
        sx, sy = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)
        tx, ty = uniform(-1, 1) * (1 - sx), uniform(-1, 1) * (1 - sy)
        angle = uniform(0, 2 * math.pi)
        flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([sx * cos * flip, -sy * sin, tx], 1), torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta.to(images.dtype), [b, images.shape[1], size, size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _appearance(self, crops: torch.Tensor, blur: nn.Module, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = crops.shape
        flat = crops.reshape(b * c, h, w).clamp(0.0, 1.0)
        for transform in (self.intensity, blur, self.noise):
            flat = transform(flat, generator=generator)
        return flat.reshape(b, c, h, w)

    def forward(self, images: torch.Tensor, *, generator: torch.Generator) -> list[torch.Tensor]:
        """List of crops: 2 global ``(B, C, global_size, global_size)`` then the local ones."""
        if images.ndim != 4:
            raise ValueError(f"Multi-crop takes a batch (B, C, H, W), got shape {tuple(images.shape)}.")
        views = [
            self._appearance(self._crop(images, self.global_size, self.global_scale, generator), self.blurs[i], generator)
            for i in range(2)
        ]
        views += [
            self._appearance(self._crop(images, self.local_size, self.local_scale, generator), self.blurs[2], generator)
            for _ in range(self.n_local_crops)
        ]
        return views
