"""Feature networks of the published image-synthesis metrics, built without torchvision and loaded from local files.

* :class:`FIDInceptionV3`: the Inception-v3 of pytorch-fid (the TensorFlow FID network ported to PyTorch, weights
  ``pt_inception-2015-12-05-6726825d.pth``), giving its 2048-d pool3 features. Its module names follow torchvision's
  ``Inception3``, so pytorch-fid's weight file loads as it is; the three changes of pytorch-fid's ``FIDInception*``
  blocks are kept (average pooling without the zero padding, max pooling in the last block).
* :class:`LPIPSNetwork`: LPIPS v0.1 (Zhang et al. 2018) with an AlexNet or VGG16 backbone: torchvision's ImageNet
  weights for the backbone (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``) and the linear heads shipped in the
  ``lpips`` wheel (``lpips/weights/v0.1/{alex,vgg}.pth``).

Nothing is downloaded: :func:`load_fid_inception` and :func:`load_lpips` read the files given and refuse files that
do not fit, naming the file. A network with random weights gives numbers with no meaning, so there is no fallback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional

__all__ = ["FIDInceptionV3", "LPIPSNetwork", "load_fid_inception", "load_lpips", "three_channels"]

_FID_INPUT = 299  # pytorch-fid resizes every image to 299 x 299 (bilinear) before the network


def three_channels(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` grey images replicated to RGB (as pytorch-fid does for grey data); RGB passes unchanged."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected grey or RGB images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# --------------------------------------------------------------------------------------------------------------------
# Inception-v3 of pytorch-fid


class _ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3) and ReLU: torchvision's ``BasicConv2d`` (same weight names)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], **kwargs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 average pooling that, like TensorFlow's, leaves the zero padding out of the mean (pytorch-fid's patch)."""
    return functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35 x 35 block (``Mixed_5b``-``5d``): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = _ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        five = self.branch5x5_2(self.branch5x5_1(x))
        return torch.cat([self.branch1x1(x), five, double, self.branch_pool(_avg_pool(x))], 1)


class _BlockB(nn.Module):
    """35 -> 17 reduction (``Mixed_6a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, functional.max_pool2d(x, kernel_size=3, stride=2)], 1)


class _BlockC(nn.Module):
    """17 x 17 block with factorised 7 x 7 convolutions (``Mixed_6b``-``6e``)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = _ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = _ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_avg_pool(x))], 1)


class _BlockD(nn.Module):
    """17 -> 8 reduction (``Mixed_7a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), seven, functional.max_pool2d(x, kernel_size=3, stride=2)], 1
        )


class _BlockE(nn.Module):
    """8 x 8 block with split 3 x 3 branches (``Mixed_7b``, and ``Mixed_7c`` with max pooling as pytorch-fid)."""

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = _ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = functional.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """pytorch-fid's Inception-v3 up to the final average pooling: images ``(B, 1 or 3, H, W)`` in [0, 1] ->
    ``(B, 2048)`` pool3 features, the features FID is defined on.

    As pytorch-fid: grey images are replicated to RGB, resized to 299 x 299 (bilinear, ``align_corners=False``) and
    scaled to [-1, 1]. Built with random weights: load pytorch-fid's file with :func:`load_fid_inception`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = functional.interpolate(
            three_channels(images), size=(_FID_INPUT, _FID_INPUT), mode="bilinear", align_corners=False
        )
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(2 * x - 1)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(functional.max_pool2d(x, kernel_size=3, stride=2)))
        x = functional.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


# --------------------------------------------------------------------------------------------------------------------
# LPIPS


def _vgg16_layers() -> list[tuple]:
    """torchvision's VGG16 ``features`` up to ``relu5_3``: five blocks of 3 x 3 convolutions, max pooling between."""
    layers: list[tuple] = []
    in_channels = 3
    for block, (channels, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(("pool", 2, 2))
        for _ in range(convs):
            layers += [("conv", in_channels, channels, 3, 1, 1), ("relu",)]
            in_channels = channels
    return layers


#: Per backbone: torchvision's ``features`` layers up to the last tap (("conv", in, out, kernel, stride, padding),
#: ("relu",) or ("pool", kernel, stride)), the indices whose outputs LPIPS compares, and their channels.
_LPIPS_BACKBONES: dict[str, tuple[list[tuple], tuple[int, ...], tuple[int, ...]]] = {
    "alex": (
        [
            ("conv", 3, 64, 11, 4, 2),
            ("relu",),
            ("pool", 3, 2),
            ("conv", 64, 192, 5, 1, 2),
            ("relu",),
            ("pool", 3, 2),
            ("conv", 192, 384, 3, 1, 1),
            ("relu",),
            ("conv", 384, 256, 3, 1, 1),
            ("relu",),
            ("conv", 256, 256, 3, 1, 1),
            ("relu",),
        ],
        (1, 4, 7, 9, 11),
        (64, 192, 384, 256, 256),
    ),
    "vgg": (
        _vgg16_layers(),
        (3, 8, 15, 22, 29),
        (64, 128, 256, 512, 512),
    ),
}


def _layer(spec: tuple) -> nn.Module:
    """One backbone layer from its ``_LPIPS_BACKBONES`` description."""
    if spec[0] == "conv":
        _, in_channels, out_channels, kernel, stride, padding = spec
        return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)
    if spec[0] == "pool":
        return nn.MaxPool2d(kernel_size=spec[1], stride=spec[2])
    return nn.ReLU()


class _LinearHead(nn.Module):
    """LPIPS' 1 x 1 weighting of one layer's squared feature differences (``lin{k}.model.1.weight`` in its files)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPSNetwork(nn.Module):
    """LPIPS v0.1 distance between image pairs ``(B, 1 or 3, H, W)`` in [0, 1] -> ``(B,)``; 0 for identical images.

    Images are scaled to [-1, 1] (the lpips package's ``normalize=True``; the seed passed [0, 1] without it), grey
    replicated to RGB, shifted and scaled as LPIPS' ``ScalingLayer``; each tapped layer's features are unit-normalised
    along the channels, their squared differences weighted by the linear heads, averaged over the image and summed over
    the layers. Built with random weights: load the files with :func:`load_lpips`.

    Args:
        net: backbone, ``"alex"`` (the lpips default) or ``"vgg"`` (VGG16, as the seed's code).
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _LPIPS_BACKBONES:
            raise ValueError(f"LPIPS net must be one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
        layers, self.taps, channels = _LPIPS_BACKBONES[net]
        self.net = net
        self.features = nn.Sequential(*(_layer(spec) for spec in layers))
        for k, width in enumerate(channels):
            self.add_module(f"lin{k}", _LinearHead(width))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalised features of every tapped layer."""
        x = (2 * three_channels(images) - 1 - self.shift) / self.scale
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return outputs

    def forward(self, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        distance = images.new_zeros(images.shape[0])
        for k, (a, b) in enumerate(zip(self._taps(images), self._taps(references), strict=True)):
            distance = distance + getattr(self, f"lin{k}").model((a - b).pow(2)).mean(dim=(1, 2, 3))
        return distance


# --------------------------------------------------------------------------------------------------------------------
# loading


def _read_state(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from ``path``; errors name the file and ``what`` it should be."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as err:
        raise ValueError(f"{path} cannot be read as {what}: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not {what}: expected a state dict of tensors, got {type(state).__name__}")
    return dict(state)


def _load_checked(
    network: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike, what: str, prefix: str = ""
) -> None:
    """Load ``state`` into ``network``'s parameters whose names start with ``prefix``; every one must be present and
    of the right shape (batch-norm counters may be missing, as in old files), and ``state`` must hold nothing else."""
    expected = {k: v for k, v in network.state_dict().items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{len(missing)} missing weight(s) {missing[:3]}" if missing else "",
        f"{len(unexpected)} unexpected weight(s) {unexpected[:3]}" if unexpected else "",
        f"{len(wrong)} of another shape {wrong[:3]}" if wrong else "",
    ]
    if any(problems):
        raise ValueError(f"{path} is not {what}: " + "; ".join(p for p in problems if p))
    network.load_state_dict({**network.state_dict(), **state}, strict=True)


def load_fid_inception(path: str | os.PathLike) -> FIDInceptionV3:
    """:class:`FIDInceptionV3` with pytorch-fid's weights from the local file ``path``, in eval mode, frozen.

    The file's classifier (``fc.*``, not needed for pool3 features) is ignored.

    Raises:
        ValueError: the file cannot be read or does not hold the FID Inception's weights (the file is named, with the
            first missing, unexpected or misshapen weights).
    """
    what = "pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth)"
    state = {k: v for k, v in _read_state(path, what).items() if not k.startswith("fc.")}
    network = FIDInceptionV3()
    _load_checked(network, state, path, what)
    return network.eval().requires_grad_(False)


def load_lpips(backbone_path: str | os.PathLike, linear_path: str | os.PathLike, net: str = "alex") -> LPIPSNetwork:
    """:class:`LPIPSNetwork` with torchvision's ImageNet backbone and LPIPS' linear heads from two local files.

    Args:
        backbone_path: torchvision's ``alexnet``/``vgg16`` state dict (its ``classifier.*`` weights are ignored).
        linear_path: the lpips package's ``weights/v0.1/<net>.pth`` (``lin0.model.1.weight`` ...).
        net: ``"alex"`` or ``"vgg"``, matching both files.

    Raises:
        ValueError: a file cannot be read or does not fit ``net`` (named).
    """
    network = LPIPSNetwork(net)
    backbone = {
        k: v
        for k, v in _read_state(backbone_path, f"torchvision's {net} weights").items()
        if not k.startswith("classifier.")
    }
    _load_checked(network, backbone, backbone_path, f"torchvision's {net} ImageNet weights", prefix="features.")
    _load_checked(
        network, _read_state(linear_path, "LPIPS heads"), linear_path, f"LPIPS v0.1 {net} heads", prefix="lin"
    )
    return network.eval().requires_grad_(False)
