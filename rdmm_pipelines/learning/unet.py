"""A dimension-generic U-Net (2D or 3D) whose output may stop one level above full resolution.

Encoder: per level two 3x3(x3) convolutions with leaky ReLU, then a stride-2 convolution down.
Decoder: transposed stride-2 convolution up, concatenation with the encoder's features of that
level, two convolutions. ``output_level = 1`` ends the decoder at half resolution, as the
authors' momentum network does for shooting at half resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["UNet", "conv_layer", "init_weights"]


def conv_layer(ndim: int, transposed: bool = False) -> type[nn.Module]:
    """nn.Conv2d / nn.Conv3d (or their transposed versions) for ``ndim`` spatial axes."""
    if ndim not in (2, 3):
        raise ValueError(f"networks are 2D or 3D, got {ndim} spatial axes")
    if transposed:
        return nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def init_weights(module: nn.Module) -> None:
    """He initialisation for the leaky-ReLU convolutions (PyTorch's default shrinks activations
    about twofold per layer, which leaves a deep U-Net's output features near zero), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _Block(nn.Sequential):
    def __init__(self, ndim: int, c_in: int, c_out: int) -> None:
        conv = conv_layer(ndim)
        super().__init__(conv(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                         conv(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """(B, c_in, *S) -> (B, c_out, *S / 2**output_level).

    Args:
        ndim: 2 or 3.
        c_in, c_out: input and output channels.
        features: channels per level, finest first; ``len(features) - 1`` poolings, so every
            input axis must be a multiple of 2 ** (len(features) - 1).
        output_level: 0 (full resolution), 1 (half resolution), ... (at most the number of poolings).
    """

    def __init__(self, ndim: int, c_in: int, c_out: int, features: Sequence[int], output_level: int = 0) -> None:
        super().__init__()
        if len(features) < 2:
            raise ValueError("a U-Net needs at least two levels of features")
        if not 0 <= output_level < len(features):
            raise ValueError(f"output_level must be in [0, {len(features) - 1}], got {output_level}")
        conv, up = conv_layer(ndim), conv_layer(ndim, transposed=True)
        self.ndim, self.output_level, self.levels = ndim, output_level, len(features) - 1
        f = list(features)
        self.encoders = nn.ModuleList([_Block(ndim, c_in, f[0])] + [_Block(ndim, f[k], f[k]) for k in range(1, len(f))])
        self.downs = nn.ModuleList([conv(f[k], f[k + 1], 3, stride=2, padding=1) for k in range(len(f) - 1)])
        self.ups = nn.ModuleList([up(f[k + 1], f[k], 2, stride=2) for k in range(output_level, len(f) - 1)])
        self.decoders = nn.ModuleList([_Block(ndim, 2 * f[k], f[k]) for k in range(output_level, len(f) - 1)])
        self.head = conv(f[output_level], c_out, 3, padding=1)
        init_weights(self)

    def check_input(self, x: Tensor) -> None:
        """Raise a ValueError unless ``x`` is (B, C, *S) with every axis a multiple of 2 ** levels."""
        multiple = 2 ** self.levels
        if x.dim() != self.ndim + 2 or any(n % multiple for n in x.shape[2:]):
            raise ValueError(
                f"a {self.ndim}D U-Net with {self.levels} poolings takes (B, C, *S) with every axis a multiple "
                f"of {multiple}; got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        skips = []
        for k, enc in enumerate(self.encoders):
            x = enc(x)
            if k < self.levels:
                skips.append(x)
                x = self.downs[k](x)
        for up, dec, skip in zip(reversed(self.ups), reversed(self.decoders), reversed(skips[self.output_level:])):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
