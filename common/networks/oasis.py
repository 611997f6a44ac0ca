"""OASIS: the SPADE generator with 3D noise and the (N+1)-class U-Net discriminator (Schönfeld, Sushko et al., 2021).

A faithful port of ``boschresearch/OASIS`` (``models/generator.py``, ``models/discriminator.py``, ``models/norms.py``)
with the widths, depths and sizes as constructor arguments. The generator turns a one-hot label map (plus a noise
vector broadcast over the image, the "3D noise") into an image in [-1, 1]; the discriminator segments an image into
the N semantic classes plus one "fake" class (channel 0), per pixel. The losses that go with them are in
``common.engines.oasis_losses``; the EMA generator's BatchNorm statistics are refreshed with
``common.engines.refresh_batchnorm_statistics`` before it is evaluated.

Initialisation follows OASIS's ``init_networks``: Xavier-normal weights with gain 0.02 and zero biases for every
convolution (before spectral normalisation, so that its power iteration starts from the initialised weights). OASIS
also draws BatchNorm weights from N(1, 0.02), but its only BatchNorms, the ones in SPADE, have no affine weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = ["OASISSPADE", "OASISDiscriminator", "OASISGenerator", "OASISResBlock"]

_INIT_GAIN = 0.02
_SLOPE = 0.2
_SPECTRAL_KEY = ".parametrizations.weight.original"


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, spectral: bool = False
) -> nn.Module:
    """A same-padded Conv2d with OASIS's initialisation, spectrally normalised with ``spectral``."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    nn.init.xavier_normal_(conv.weight, gain=_INIT_GAIN)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return _spectral_norm(conv) if spectral else conv


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")


class OASISSPADE(nn.Module):
    """OASIS's SPADE: parameter-free BatchNorm, then a per-pixel scale and shift predicted from the segmentation map.

    ``out = BN(x) * (1 + gamma) + beta`` with ``a = ReLU(Conv(s))``, ``gamma = Conv(a)``, ``beta = Conv(a)``, where
    ``s`` is ``segmap`` (the one-hot label and the noise channels) resized to ``x``'s size by nearest neighbour. The
    BatchNorm has no affine parameters and the convolutions are not spectrally normalised (``models/norms.py``).

    MONAI's ``monai.networks.blocks.SPADE`` is a different block: its ``mlp_gamma``/``mlp_beta`` are ``Convolution``
    blocks with the default instance normalisation (gamma and beta are normalised per channel), its shared layer uses
    LeakyReLU instead of ReLU, its hidden width defaults to 64 and its parameter-free norm to instance norm.

    Args:
        norm_channels: channels of the normalised features ``x``.
        label_channels: channels of ``segmap`` (number of classes, plus the noise dimension in OASIS).
        hidden_channels: width of the shared convolution (128 in OASIS).
        kernel_size: odd kernel size of the three convolutions (``spade_ks``, 3 in OASIS).
    """

    def __init__(
        self, norm_channels: int, label_channels: int, hidden_channels: int = 128, kernel_size: int = 3
    ) -> None:
        super().__init__()
        _check_positive(
            norm_channels=norm_channels,
            label_channels=label_channels,
            hidden_channels=hidden_channels,
            kernel_size=kernel_size,
        )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}.")
        self.first_norm = nn.BatchNorm2d(norm_channels, affine=False)
        self.mlp_shared = nn.Sequential(_conv(label_channels, hidden_channels, kernel_size), nn.ReLU())
        self.mlp_gamma = _conv(hidden_channels, norm_channels, kernel_size)
        self.mlp_beta = _conv(hidden_channels, norm_channels, kernel_size)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        """Modulate ``x`` (B, norm_channels, H, W) by ``segmap`` (B, label_channels, H', W')."""
        normalized = self.first_norm(x)
        segmap = functional.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        hidden = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class OASISResBlock(nn.Module):
    """OASIS's ``ResnetBlock_with_SPADE``: two SPADE -> LeakyReLU(0.2) -> Conv3x3 layers and a shortcut.

    ``out = x_s + conv_1(act(norm_1(conv_0(act(norm_0(x))))))`` with ``fmiddle = min(fin, fout)`` channels between
    the convolutions. The shortcut ``x_s`` is ``x`` when ``fin == fout``, else the learned ``conv_s(norm_s(x))``
    (SPADE then Conv1x1 without bias). ``conv_0``, ``conv_1`` and ``conv_s`` are spectrally normalised.

    Args:
        in_channels: ``fin``.
        out_channels: ``fout``.
        label_channels: channels of the conditioning map given to every SPADE.
        spade_hidden: hidden width of the SPADE blocks.
        spade_kernel_size: kernel size of the SPADE convolutions.
        spectral_norm: spectrally normalise the block's convolutions (OASIS's default; see ``OASISGenerator``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        label_channels: int,
        spade_hidden: int = 128,
        spade_kernel_size: int = 3,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        middle = min(in_channels, out_channels)
        self.activ = nn.LeakyReLU(_SLOPE)
        self.conv_0 = _conv(in_channels, middle, 3, spectral=spectral_norm)
        self.conv_1 = _conv(middle, out_channels, 3, spectral=spectral_norm)
        self.norm_0 = OASISSPADE(in_channels, label_channels, spade_hidden, spade_kernel_size)
        self.norm_1 = OASISSPADE(middle, label_channels, spade_hidden, spade_kernel_size)
        self.conv_s: nn.Module | None = None
        self.norm_s: OASISSPADE | None = None
        if in_channels != out_channels:
            self.conv_s = _conv(in_channels, out_channels, 1, bias=False, spectral=spectral_norm)
            self.norm_s = OASISSPADE(in_channels, label_channels, spade_hidden, spade_kernel_size)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        """Apply the block to ``x`` conditioned on ``segmap`` (resized inside each SPADE)."""
        shortcut = x
        if self.conv_s is not None and self.norm_s is not None:
            shortcut = self.conv_s(self.norm_s(x, segmap))
        dx = self.conv_0(self.activ(self.norm_0(x, segmap)))
        dx = self.conv_1(self.activ(self.norm_1(dx, segmap)))
        return shortcut + dx


def _bake_spectral_norm(
    module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load-state-dict pre-hook: turn spectrally normalised weights into the plain weights they stand for.

    A spectrally normalised convolution stores ``W`` (``...parametrizations.weight.original``) and the power
    iteration's vectors ``u``, ``v``; in eval mode its weight is ``W / (u . W v)``, which is what a network built
    without spectral normalisation receives here, so a trained checkpoint loads into an exportable network.
    """
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith(_SPECTRAL_KEY)]:
        base = key[: -len(_SPECTRAL_KEY)]
        weight = state_dict.pop(key)
        u = state_dict.pop(f"{base}.parametrizations.weight.0._u")
        v = state_dict.pop(f"{base}.parametrizations.weight.0._v")
        state_dict[f"{base}.weight"] = weight / torch.vdot(u, torch.mv(weight.flatten(1), v))


class OASISGenerator(nn.Module):
    """OASIS generator: one-hot label map and noise in, image in [-1, 1] out (``OASIS_Generator``).

    With ``n = len(channel_mults) - 1`` residual blocks and widths ``w_i = channels * channel_mults[i]``:

    * 3D noise: ``z`` (B, ``z_dim``) is broadcast over H x W and put before the label's channels, giving the
      conditioning map ``seg`` (B, ``z_dim + num_classes``, H, W) that every SPADE sees;
    * input: ``seg`` nearest-resized to ``image_size / 2 ** (n - 1)``, then Conv3x3 to ``w_0``;
    * body: ``OASISResBlock(w_i -> w_{i+1})`` for ``i < n``, each but the last followed by a nearest x2 upsampling;
    * output: LeakyReLU(0.2) -> Conv3x3 to ``out_channels`` -> tanh.

    At the defaults (256 x 256, ``channels`` 64) the input is 8 x 8 and the blocks go 1024 -> 1024 -> 1024 -> 512 ->
    256 -> 128 -> 64 channels over 8 -> 256 pixels, as in OASIS. ``z`` is the same at every pixel (OASIS's training
    and test code; its paper also describes per-region noise, which ``forward`` does not draw). ``z_dim=0`` removes
    the noise (OASIS's ``--no_3dnoise``).

    ``spectral_norm=False`` builds the same network with plain convolutions: a state dict saved with spectral
    normalisation loads into it with the normalised weights baked in (its eval-mode output is unchanged), which is
    how a trained generator becomes scriptable for ``torch.jit.script`` and ``monai.bundle ckpt_export``: torch's
    spectral-norm parametrisation cannot be scripted.

    Args:
        num_classes: channels of the one-hot label map (OASIS's ``semantic_nc``, background included).
        out_channels: image channels.
        channels: base width ``ch`` (``channels_G``).
        channel_mults: width multipliers of the input convolution and of each block's output.
        z_dim: length of the noise vector (0: no noise).
        spade_hidden: hidden width of every SPADE.
        spade_kernel_size: kernel size of the SPADE convolutions.
        image_size: spatial size of the label maps, an int or (H, W); divisible by ``2 ** (len(channel_mults) - 2)``.
        spectral_norm: spectrally normalise the residual blocks' convolutions.
    """

    def __init__(
        self,
        num_classes: int,
        out_channels: int = 1,
        channels: int = 64,
        channel_mults: Sequence[int] = (16, 16, 16, 8, 4, 2, 1),
        z_dim: int = 64,
        spade_hidden: int = 128,
        spade_kernel_size: int = 3,
        image_size: int | Sequence[int] = 256,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, out_channels=out_channels, channels=channels)
        if int(z_dim) != z_dim or z_dim < 0:
            raise ValueError(f"z_dim must be an integer >= 0, got {z_dim}.")
        mults = [int(m) for m in channel_mults]
        if len(mults) < 2 or min(mults) < 1:
            raise ValueError(f"channel_mults needs at least two positive entries, got {list(channel_mults)}.")
        size = (int(image_size),) * 2 if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        factor = 2 ** (len(mults) - 2)
        if len(size) != 2 or min(size) < 1 or any(s % factor for s in size):
            raise ValueError(
                f"image_size must be one or two positive sizes divisible by 2 ** (len(channel_mults) - 2) = {factor} "
                f"(the generator starts at image_size / {factor} and upsamples x2 {len(mults) - 2} times), "
                f"got {image_size}."
            )
        self.num_classes = int(num_classes)
        self.z_dim = int(z_dim)
        self.image_size: tuple[int, int] = (size[0], size[1])
        self.input_size: tuple[int, int] = (size[0] // factor, size[1] // factor)
        self.widths = [channels * m for m in mults]
        label_channels = self.num_classes + self.z_dim
        self.fc = _conv(label_channels, self.widths[0], 3)
        self.body = nn.ModuleList(
            OASISResBlock(
                self.widths[i], self.widths[i + 1], label_channels, spade_hidden, spade_kernel_size, spectral_norm
            )
            for i in range(len(mults) - 1)
        )
        self.activ = nn.LeakyReLU(_SLOPE)
        self.conv_img = _conv(self.widths[-1], out_channels, 3)
        if not spectral_norm:
            self.register_load_state_dict_pre_hook(_bake_spectral_norm)

    def forward(
        self, label_onehot: Tensor, z: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Generate (B, out_channels, H, W) images in [-1, 1] from one-hot labels (B, num_classes, H, W).

        ``z`` (B, z_dim) is drawn from N(0, I) when not given, with ``generator`` if one is given (it must be on the
        label's device); the same ``z`` and label give the same image in eval mode.
        """
        if label_onehot.dim() != 4 or label_onehot.shape[1] != self.num_classes:
            raise ValueError(
                f"OASISGenerator expects a one-hot label map of shape (B, {self.num_classes}, H, W), got "
                f"{list(label_onehot.shape)}: num_classes must count every class, background included."
            )
        if label_onehot.shape[2] != self.image_size[0] or label_onehot.shape[3] != self.image_size[1]:
            raise ValueError(
                f"OASISGenerator was built for {list(self.image_size)} label maps (image_size), got "
                f"{list(label_onehot.shape[2:])}."
            )
        batch = label_onehot.shape[0]
        segmap = label_onehot
        if self.z_dim > 0:
            if z is None:
                z = torch.randn(
                    (batch, self.z_dim), generator=generator, device=label_onehot.device, dtype=label_onehot.dtype
                )
            elif z.dim() != 2 or z.shape[0] != batch or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape ({batch}, {self.z_dim}), got {list(z.shape)}.")
            noise = z.to(device=label_onehot.device, dtype=label_onehot.dtype)[:, :, None, None].expand(
                -1, -1, segmap.shape[2], segmap.shape[3]
            )
            segmap = torch.cat([noise, segmap], dim=1)
        elif z is not None:
            raise ValueError("z was given but the generator has z_dim=0 (no noise input).")
        x = self.fc(functional.interpolate(segmap, size=self.input_size, mode="nearest"))
        last = len(self.body) - 1
        for i, block in enumerate(self.body):
            x = block(x, segmap)
            if i < last:
                x = functional.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.tanh(self.conv_img(self.activ(x)))


class _DiscriminatorBlock(nn.Module):
    """OASIS's ``residual_block_D``: LeakyReLU(0.2) -> Conv3x3 twice (no activation first in the first block).

    ``up`` upsamples (nearest x2) before the first convolution and on the shortcut; ``down`` average-pools the
    residual and the shortcut. The shortcut has a Conv1x1 when the widths differ (pooling and a 1x1 convolution
    commute, so the order OASIS uses in its first block makes no difference).
    """

    def __init__(self, in_channels: int, out_channels: int, up: bool, first: bool, spectral: bool) -> None:
        super().__init__()
        self.up = up
        self.first = first
        self.activ = nn.LeakyReLU(_SLOPE)
        self.conv1 = _conv(in_channels, out_channels, 3, spectral=spectral)
        self.conv2 = _conv(out_channels, out_channels, 3, spectral=spectral)
        self.conv_s = (
            _conv(in_channels, out_channels, 1, spectral=spectral) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = functional.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x
        shortcut = self.conv_s(shortcut)
        dx = x if self.first else self.activ(x)
        if self.up:
            dx = functional.interpolate(dx, scale_factor=2.0, mode="nearest")
        dx = self.conv2(self.activ(self.conv1(dx)))
        if not self.up:
            dx, shortcut = functional.avg_pool2d(dx, 2), functional.avg_pool2d(shortcut, 2)
        return shortcut + dx


class OASISDiscriminator(nn.Module):
    """OASIS discriminator: a U-Net of residual blocks that segments an image into "fake" + N classes per pixel.

    With widths ``c_0 = in_channels, c_1..c_n = channels``:

    * encoder: ``n`` blocks ``c_i -> c_{i+1}``, each average-pooling x2 (the first without pre-activation);
    * decoder: ``c_n -> c_{n-1}``, then on ``cat[encoder output, x]`` blocks ``2 c_{n-i} -> c_{n-1-i}`` and finally
      ``2 c_1 -> head_channels``, each upsampling x2 (nearest), back to the input size;
    * head: Conv1x1 to ``num_classes + 1`` logits; **channel 0 is "fake"**, channel ``k + 1`` is class ``k``.

    Every convolution but the head's is spectrally normalised; activations are LeakyReLU(0.2). The defaults are
    OASIS's (3 -> 128, 128, 256, 256, 512, 512, 256 x 256 -> 4 x 4 and back).

    Args:
        num_classes: semantic classes (``semantic_nc``, background included); the output has one more channel.
        in_channels: image channels.
        channels: encoder widths, one per down-sampling block (at least two).
        head_channels: width of the last decoder block.
        spectral_norm: spectrally normalise the blocks' convolutions.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        channels: Sequence[int] = (128, 128, 256, 256, 512, 512),
        head_channels: int = 64,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, head_channels=head_channels)
        widths = [int(in_channels), *(int(c) for c in channels)]
        if len(widths) < 3 or min(widths) < 1:
            raise ValueError(f"channels needs at least two positive widths, got {list(channels)}.")
        n = len(widths) - 1
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.num_levels = n
        self.body_down = nn.ModuleList(
            _DiscriminatorBlock(widths[i], widths[i + 1], up=False, first=i == 0, spectral=spectral_norm)
            for i in range(n)
        )
        up = [_DiscriminatorBlock(widths[n], widths[n - 1], up=True, first=False, spectral=spectral_norm)]
        up += [
            _DiscriminatorBlock(2 * widths[n - i], widths[n - 1 - i], up=True, first=False, spectral=spectral_norm)
            for i in range(1, n - 1)
        ]
        up.append(_DiscriminatorBlock(2 * widths[1], head_channels, up=True, first=False, spectral=spectral_norm))
        self.body_up = nn.ModuleList(up)
        self.layer_up_last = _conv(head_channels, self.num_classes + 1, 1)

    def forward(self, image: Tensor) -> Tensor:
        """Per-pixel logits (B, num_classes + 1, H, W) of an image (B, in_channels, H, W), channel 0 = fake."""
        factor = 2**self.num_levels
        if image.dim() != 4 or image.shape[1] != self.in_channels or image.shape[2] % factor or image.shape[3] % factor:
            raise ValueError(
                f"OASISDiscriminator expects images of shape (B, {self.in_channels}, H, W) with H and W divisible by "
                f"2 ** {self.num_levels} = {factor}, got {list(image.shape)}."
            )
        x = image
        skips = []
        for block in self.body_down:
            x = block(x)
            skips.append(x)
        x = self.body_up[0](x)
        for i in range(1, self.num_levels):
            x = self.body_up[i](torch.cat([skips[-i - 1], x], dim=1))
        return self.layer_up_last(x)
