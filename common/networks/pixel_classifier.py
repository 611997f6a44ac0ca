"""Pixel-level classifiers on diffusion features (Baranchuk et al. 2022; Alshenoudy et al. 2023).

Each pixel's feature vector is classified by a small MLP, ``Linear(F, 128) -> ReLU -> BatchNorm -> Linear(128, 64)
-> ReLU -> BatchNorm -> Linear(64, classes)`` (the braintumor-ddpm ``pixel_classifier``). An ensemble of such MLPs,
as in ddpm-segmentation, gives a steadier vote and, through its members' disagreement, an uncertainty map; one
member is the original paper's single classifier.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClassWeightedCrossEntropy", "EnsembleCrossEntropy", "PixelClassifierEnsemble", "PixelMLP"]


class PixelMLP(nn.Sequential):
    """The per-pixel MLP: ``(N, num_features)`` -> ``(N, num_classes)`` logits."""

    def __init__(self, num_features: int, num_classes: int, hidden: tuple[int, int] = (128, 64)) -> None:
        super().__init__(
            nn.Linear(num_features, hidden[0]),
            nn.ReLU(),
            nn.BatchNorm1d(hidden[0]),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.BatchNorm1d(hidden[1]),
            nn.Linear(hidden[1], num_classes),
        )


class PixelClassifierEnsemble(nn.Module):
    """``ensemble_size`` independently initialised pixel MLPs applied to every pixel.

    ``forward`` takes a batch of pixels ``(N, F)`` and returns ``(N, K, C)`` logits, or feature maps ``(B, F, *S)``
    and returns ``(B, K, C, *S)``: member ``k``'s logits of class ``c`` at every position.

    Args:
        num_features: length of a pixel's feature vector (``DiffusionFeatureExtractor.num_features``).
        num_classes: output classes, background included.
        ensemble_size: number of MLPs (10 in ddpm-segmentation; 1 is the braintumor-ddpm classifier).
        hidden: widths of the two hidden layers.
    """

    def __init__(
        self, num_features: int, num_classes: int, ensemble_size: int = 10, hidden: tuple[int, int] = (128, 64)
    ) -> None:
        super().__init__()
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.members = nn.ModuleList(PixelMLP(num_features, num_classes, hidden) for _ in range(ensemble_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim < 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"expected features of shape (N, {self.num_features}) or (B, {self.num_features}, ...), got "
                f"{list(features.shape)}; do feature_blocks/feature_timesteps match the trained classifier?"
            )
        spatial = list(features.shape[2:])
        pixels = features.movedim(1, -1).reshape(-1, self.num_features)
        logits = torch.stack([member(pixels) for member in self.members], dim=1)  # (P, K, C)
        if len(spatial) == 0:
            return logits
        logits = logits.reshape([features.shape[0]] + spatial + [len(self.members), self.num_classes])  # noqa: RUF005 (TorchScript)
        return logits.movedim(-2, 1).movedim(-1, 2)


class ClassWeightedCrossEntropy(nn.Module):
    """Cross-entropy with per-class weights on ``(N, C, *S)`` logits and ``(N, *S)`` or ``(N, 1, *S)`` class indices.

    Args:
        weight: per-class weights ([0.1, 0.3, 0.3, 0.3] in the paper, which down-weights the background).
    """

    def __init__(self, weight: list[float] | None = None) -> None:
        super().__init__()
        self.loss = nn.CrossEntropyLoss(weight=None if weight is None else torch.as_tensor(weight, dtype=torch.float))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        if target.ndim == logits.ndim:
            target = target.squeeze(1)
        if self.loss.weight is not None and self.loss.weight.numel() != logits.shape[1]:
            raise ValueError(
                f"class_weights has {self.loss.weight.numel()} entries but the network predicts {logits.shape[1]} "
                "classes (num_classes + 1, background included)."
            )
        return self.loss(logits, target)


class EnsembleCrossEntropy(ClassWeightedCrossEntropy):
    """:py:class:`ClassWeightedCrossEntropy` of every ensemble member (logits ``(N, K, C, *S)``), averaged."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        members = logits.shape[1]
        return sum(super(EnsembleCrossEntropy, self).forward(logits[:, k], target) for k in range(members)) / members
