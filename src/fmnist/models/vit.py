"""Vision transformers trained from scratch: report C's small ViT and report E's three ViT variants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention (fused kernels where available)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class Block(nn.Module):
    """A pre-norm transformer encoder block (ViT, Dosovitskiy et al. 2021): x + MHSA(LN x), x + MLP(LN x)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping `patch_size` patches, each linearly projected to `dim` (a strided conv)."""

    def __init__(self, patch_size: int, dim: int, channels: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)


def _check_patches(image_size: int, patch_size: int) -> int:
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
    return (image_size // patch_size) ** 2


class ViTTiny(nn.Module):
    """Report C's ViT: input resized to 64x64 (bilinear, on the device), 4x4 patches (256 tokens),
    class token, learned position embeddings, `num_layers` pre-norm blocks, linear head on the class
    token. Defaults: hidden 16, 2 layers, 2 heads (report C's first model; its sweeps set 8-32
    hidden, 2-8 layers, 2-8 heads). The MLP width is `mlp_ratio` * hidden (4, ViT's ratio; the report
    does not give it). Input stays normalised as the trainer gives it (one channel, no re-scaling).
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 64,
        patch_size: int = 4,
        hidden_size: int = 16,
        num_layers: int = 2,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        tokens = _check_patches(image_size, patch_size)
        self.image_size = image_size
        self.embed = PatchEmbed(patch_size, hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, hidden_size) * 0.02)
        mlp = int(hidden_size * mlp_ratio)
        self.blocks = nn.Sequential(*[Block(hidden_size, num_heads, mlp, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = self.embed(x)  # (N, 256, D)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos  # (N, 257, D)
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])  # (N, classes)


class ViTSimple(nn.Module):
    """Report E's base ViT: 7x7 patches of the 28x28 image (16 tokens), learned position embeddings,
    4 pre-norm blocks, global average pool over tokens instead of a class token, linear head.

    Chosen where the report is silent: hidden 64, 4 heads, MLP 128, no dropout.
    """

    def __init__(
        self,
        num_classes: int = 10,
        patch_size: int = 7,
        hidden_size: int = 64,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid = 28 // patch_size
        tokens = _check_patches(28, patch_size)
        self.embed = PatchEmbed(patch_size, hidden_size)
        self.pos = nn.Parameter(torch.randn(1, tokens, hidden_size) * 0.02)
        self.blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_dim, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_classes)

    def between_blocks(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos  # (N, 16, D)
        for i, block in enumerate(self.blocks):
            x = self.between_blocks(block(x), i)
        return self.head(self.norm(x).mean(dim=1))  # global average pool over tokens -> (N, classes)


class ViTDWConv(ViTSimple):
    """Report E's depthwise-convolution ViT: the base ViT with, after every block but the last, a
    residual depthwise 3x3 conv over the token grid (x + DWConv(x), tokens laid back out as 4x4),
    which gives the tokens a local, convolutional mixing path.
    """

    def __init__(self, num_classes: int = 10, patch_size: int = 7, hidden_size: int = 64, num_layers: int = 4,
                 num_heads: int = 4, mlp_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__(num_classes, patch_size, hidden_size, num_layers, num_heads, mlp_dim, dropout)
        self.dwconvs = nn.ModuleList(
            [nn.Conv2d(hidden_size, hidden_size, 3, padding=1, groups=hidden_size) for _ in range(num_layers - 1)]
        )

    def between_blocks(self, x: torch.Tensor, i: int) -> torch.Tensor:
        if i >= len(self.dwconvs):
            return x
        n, t, d = x.shape
        grid = x.transpose(1, 2).reshape(n, d, self.grid, self.grid)  # (N, D, 4, 4)
        return x + self.dwconvs[i](grid).flatten(2).transpose(1, 2)  # (N, 16, D)


class ViTPatchless(nn.Module):
    """Report E's patch-free ViT: one token per pixel (784 tokens), each pixel value linearly embedded,
    plus learned position embeddings; pre-norm blocks, global average pool, linear head.

    Chosen where the report is silent: hidden 32, 4 layers, 4 heads, MLP 64 (784 tokens make attention
    the cost: about 30x the base ViT's multiply-accumulates at half its width).
    """

    def __init__(
        self,
        num_classes: int = 10,
        hidden_size: int = 32,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(1, hidden_size)
        self.pos = nn.Parameter(torch.randn(1, 28 * 28, hidden_size) * 0.02)
        self.blocks = nn.Sequential(*[Block(hidden_size, num_heads, mlp_dim, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.flatten(1).unsqueeze(-1)) + self.pos  # (N, 784, D)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))  # (N, classes)
