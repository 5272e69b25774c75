"""Small vision transformer with masked image modelling for single-channel sparse images (DARLC Module I).

DARLC (Wang et al., 2024, seed 003, §3.2.2) uses a lightweight ViT (4 blocks, 4 heads) as the
shared encoder of its MIM and contrastive branches, with 80 % of the patches masked in the MIM branch
and a fully connected decoder. Here the masked patches are replaced by a learned mask token
(SimMIM, Xie et al., 2022) and a linear layer decodes every token back to its patch pixels; the loss
is the mean squared error over the masked patches (eq. 7). Transformer blocks are timm's.

The image representation keeps *where* the signal is: the encoded patch tokens, average-pooled to
at most ``pool_grid x pool_grid`` grid positions, concatenated in grid order. The seed does not say
how its ViT summarises an image; the two usual choices fail on sparse gene images, because what
tells their patterns apart is location, not texture (simulated gene images, 5 patterns, k-means
NMI on the warm-up embedding: class token 0.09, mean of the patch tokens 0.05, pooled grid 0.84).
With a ``token_mask`` only the patches that overlap the tissue become tokens: off-tissue patches are
constant padding that costs attention and dilutes the masked-modelling loss with trivially
reconstructed blanks.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SparseImageViT", "adapt_patch_embedding", "channel_vit", "sincos_pos_embed"]


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """``(1 + gh * gw, dim)`` 2-D sine-cosine position embedding (zeros for the class token), as in MAE."""
    if dim % 4:
        raise ValueError(f"`embed_dim`={dim} must be a multiple of 4 for the 2-D sin-cos position embedding.")
    gh, gw = grid
    yy, xx = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    parts = []
    for pos in (yy.reshape(-1), xx.reshape(-1)):
        angle = pos[:, None] * omega[None]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat([torch.zeros(1, dim), torch.cat(parts, dim=1)], dim=0)


class SparseImageViT(nn.Module):
    """ViT encoder for ``(B, 1, H, W)`` images with a per-token linear MIM decoder.

    Parameters
    ----------
    image_size
        ``(H, W)``, both multiples of ``patch_size``.
    patch_size
        Side of the square patches.
    embed_dim, depth, num_heads
        Transformer width, number of blocks and attention heads (paper: 4 blocks, 4 heads).
    pool_grid
        The representation averages the token grid down to at most ``pool_grid`` positions per
        side (its size is ``embed_dim * rows * cols``, bounded whatever the image size).
    token_mask
        Boolean ``(rows, cols)`` patch grid: only these patches become tokens (e.g. those that
        overlap the tissue), are masked and reconstructed, and enter the pooled representation
        (averaged over the kept tokens of each pooled cell; a cell without any is 0). ``None``:
        every patch. Kept as a buffer, so it travels with the state dict.
    """

    def __init__(self, image_size: tuple[int, int], *, patch_size: int, embed_dim: int = 64, depth: int = 4, num_heads: int = 4,
                 pool_grid: int = 8, token_mask: torch.Tensor | None = None) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"`image_size` {image_size} must be a multiple of `patch_size`={patch_size}.")
        if embed_dim % num_heads:
            raise ValueError(f"`embed_dim`={embed_dim} must be divisible by `num_heads`={num_heads}.")
        self.patch_size = patch_size
        self.grid = (h // patch_size, w // patch_size)
        self.patch_embed = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed 2-D sin-cos position embedding (MAE): for sparse images *where* the signal is, is
        # what distinguishes patterns, and a learned embedding initialised at std 0.02 needs far more
        # steps than a per-dataset training of a few hundred images provides
        self.register_buffer("pos_embed", sincos_pos_embed(embed_dim, self.grid)[None], persistent=False)
        for p in (self.cls_token, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder = nn.Linear(embed_dim, patch_size * patch_size)
        self.embed_dim = embed_dim
        if token_mask is None:
            token_mask = torch.ones(self.grid, dtype=torch.bool)
        token_mask = torch.as_tensor(token_mask, dtype=torch.bool)
        if tuple(token_mask.shape) != self.grid:
            raise ValueError(f"`token_mask` must have the patch grid's shape {self.grid}; got {tuple(token_mask.shape)}.")
        if int(token_mask.sum()) < 2:
            raise ValueError("`token_mask` must keep at least 2 patches (masked modelling hides some and shows others).")
        self.register_buffer("token_mask", token_mask)
        self.pooled_grid = (min(self.grid[0], pool_grid), min(self.grid[1], pool_grid))
        self.out_dim = embed_dim * self.pooled_grid[0] * self.pooled_grid[1]

    @property
    def num_patches(self) -> int:
        """Number of tokens (patches kept by ``token_mask``)."""
        return int(self.token_mask.sum())

    def _kept(self) -> torch.Tensor:
        return self.token_mask.flatten().nonzero().squeeze(1)

    def tokens(self, x: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded tokens ``(B, 1 + N, D)`` of the kept patches; where ``patch_mask`` is True they see the mask token."""
        kept = self._kept()
        t = self.patch_embed(x).flatten(2).transpose(1, 2)[:, kept]
        if patch_mask is not None:
            t = torch.where(patch_mask[..., None], self.mask_token.expand_as(t), t)
        pos = torch.cat([self.pos_embed[:, :1], self.pos_embed[:, 1:][:, kept]], dim=1)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + pos
        return self.norm(self.blocks(t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image representation ``(B, out_dim)``: the kept patch tokens pooled to ``pooled_grid``, flattened."""
        t = self.tokens(x)[:, 1:]
        full = t.new_zeros(t.shape[0], self.grid[0] * self.grid[1], self.embed_dim)
        full[:, self._kept()] = t
        grid = full.transpose(1, 2).reshape(t.shape[0], self.embed_dim, *self.grid)
        pooled = nn.functional.adaptive_avg_pool2d(grid, self.pooled_grid)
        share = nn.functional.adaptive_avg_pool2d(self.token_mask[None, None].to(t.dtype), self.pooled_grid)
        return (pooled / share.clamp_min(1e-12)).flatten(1)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B, N, patch_size**2)``: the kept patches in token order."""
        p = self.patch_size
        b = x.shape[0]
        gh, gw = self.grid
        return x.reshape(b, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, p * p)[:, self._kept()]

    def random_mask(self, batch: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boolean ``(B, N)`` with ``round(ratio * N)`` (at least 1) masked tokens per image."""
        n_mask = max(1, min(self.num_patches - 1, round(ratio * self.num_patches)))
        noise = torch.rand(batch, self.num_patches, generator=generator, device=self.pos_embed.device)
        rank = noise.argsort(dim=1).argsort(dim=1)
        return rank < n_mask

    def mim_loss(self, x: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked image modelling loss (eq. 7) and the class token of the masked view."""
        mask = self.random_mask(x.shape[0], ratio, generator)
        t = self.tokens(x, mask)
        pred = self.decoder(t[:, 1:])
        err = ((pred - self.patchify(x)) ** 2).mean(dim=-1)
        return err[mask].mean(), t[:, 0]


# ----------------------------------------------------------------------------------------------
# channel-adapted ViT of scDINO (multichannel cell images)


def adapt_patch_embedding(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt an RGB patch-embedding kernel ``(D, 3, p, p)`` to ``in_chans`` channels (scDINO).

    The three RGB kernels are averaged and the average is used for every channel, so that each
    channel has equal weight: ``W'[:, c] = mean_rgb W[:, rgb]`` for ``c = 1..in_chans``.
    """
    if weight.ndim != 4:
        raise ValueError(f"`weight` must be a (D, C, p, p) convolution kernel, got shape {tuple(weight.shape)}.")
    if int(in_chans) < 1:
        raise ValueError(f"`in_chans` must be a positive integer, got {in_chans!r}.")
    if weight.shape[1] == in_chans:
        return weight.clone()
    return weight.mean(dim=1, keepdim=True).repeat(1, int(in_chans), 1, 1)


def channel_vit(
    in_chans: int,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    embed_dim: int = 96,
    depth: int = 3,
    num_heads: int = 3,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A timm VisionTransformer for ``in_chans``-channel images, pooled by its CLS token.

    Parameters
    ----------
    in_chans
        Number of image channels.
    image_size, patch_size, embed_dim, depth, num_heads
        Architecture; crops of other sizes are accepted (positional embeddings are interpolated,
        ``dynamic_img_size``), as multi-crop needs.
    state_dict
        Weights of a ViT with the same width/depth/patch size but possibly 3 (RGB) input channels
        and another image size, e.g. DINO ViT-S/16; its patch embedding is adapted with
        :func:`adapt_patch_embedding` and its positional embedding resampled to ``image_size``.

    Returns
    -------
    ``nn.Module`` mapping ``(B, in_chans, h, w)`` to the CLS embedding ``(B, embed_dim)``.
    """
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    if image_size % patch_size:
        raise ValueError(f"`image_size`={image_size} must be a multiple of `patch_size`={patch_size}.")
    if embed_dim % num_heads:
        raise ValueError(f"`embed_dim`={embed_dim} must be divisible by `num_heads`={num_heads}.")
    model = VisionTransformer(
        img_size=image_size, patch_size=patch_size, in_chans=int(in_chans), num_classes=0, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, global_pool="token", dynamic_img_size=True,
    )
    if state_dict is not None:
        state = {k: v for k, v in state_dict.items() if not k.startswith("head")}
        key = "patch_embed.proj.weight"
        if key not in state:
            raise ValueError("`state_dict` is not a timm VisionTransformer state dict (no `patch_embed.proj.weight`).")
        state[key] = adapt_patch_embedding(state[key], in_chans)
        if "pos_embed" in state and state["pos_embed"].shape != model.pos_embed.shape:
            grid = image_size // patch_size
            state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=(grid, grid), num_prefix_tokens=1)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"`state_dict` does not fit the ViT (embed_dim={embed_dim}, depth={depth}, patch_size={patch_size}): "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}."
            )
    return model
