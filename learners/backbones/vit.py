"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021) whose tokens prompts can join.

Patch embedding (a strided convolution), a learned ``[CLS]`` token, learned position
embeddings, pre-norm transformer blocks (multi-head self-attention, GELU MLP) and a final
LayerNorm; the feature of an image is the normalised ``[CLS]`` token. The parameter names are
timm's ``VisionTransformer`` names (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``, ``norm``...), so a timm ViT state dict of the same
size loads as it is, and big_vision ``.npz`` checkpoints map onto it
(``learners.backbones.weights``).

Prompt learners (MVP) drive the pieces themselves: :meth:`ViT.embed` gives the token sequence,
:attr:`ViT.blocks` run one by one with prompt tokens appended, :attr:`ViT.norm` closes.

At the demo size (28x28 images, patch 4, width 64, depth 6) it trains on a CPU in minutes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from learners.backbones.backbone import Backbone, BackboneError, ViTOptions

# timm's ViT LayerNorm epsilon; npz and timm weights were trained with it.
LAYER_NORM_EPS = 1e-6


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise BackboneError(f"vit embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input shape ``[C, H, W]`` or ``[H, W]``."""
    if len(input_shape) == 2:
        return 1, int(input_shape[0]), int(input_shape[1])
    if len(input_shape) == 3:
        return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])
    raise BackboneError(f"vit backbone needs image inputs [C,H,W] or [H,W], got {input_shape}")


class ViT(Backbone):
    """A ViT feature extractor: images ``[B, C, H, W]`` (or ``[B, H, W]``) to ``[B, embed_dim]``."""

    def __init__(self, input_shape: tuple[int, ...], options: ViTOptions) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape)
        p = options.patch_size
        if height % p or width % p:
            raise BackboneError(
                f"vit patch_size {p} does not divide the {height}x{width} image; pick a divisor"
            )
        self.image_rank = len(input_shape)
        self.grid = (height // p, width // p)
        self.embed_dim = self.out_dim = options.embed_dim
        self.patch_embed = PatchEmbed(channels, p, options.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, options.embed_dim))
        self.pos_embed = nn.Parameter(
            torch.randn(1, 1 + self.grid[0] * self.grid[1], options.embed_dim) * 0.02
        )
        self.blocks = nn.ModuleList(
            Block(options.embed_dim, options.num_heads, options.mlp_ratio)
            for _ in range(options.depth)
        )
        self.norm = nn.LayerNorm(options.embed_dim, eps=LAYER_NORM_EPS)
        self.apply(_init_weights)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, 1 + patches, D]``: ``[CLS]`` first, position embeddings added."""
        if self.image_rank == 2:
            x = x.unsqueeze(1)
        patches = self.patch_embed(x)
        cls = self.cls_token.expand(len(patches), -1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def _init_weights(module: nn.Module) -> None:
    # The original (jax) ViT init, timm's ``weight_init='jax'``: Xavier-uniform linear layers and
    # a LeCun-normal patch embedding. Unlike timm's default std-0.02 linear init, it leaves the
    # [CLS] token of an untrained ViT depending on the image, so a randomly initialised ViT is
    # already a (weak) feature extractor.
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
    elif isinstance(module, nn.Conv2d):
        fan_in = module.in_channels * math.prod(module.kernel_size)
        nn.init.trunc_normal_(module.weight, std=1.0 / math.sqrt(fan_in))
    if isinstance(module, nn.Linear | nn.Conv2d) and module.bias is not None:
        nn.init.zeros_(module.bias)
