"""A MONAI ``Inferer`` that segments by sampling a conditional score model, with sliding windows and K samples.

``inferer(image, network)`` returns ``(B, 2, H, W)``: channel 0 is the mean of ``num_samples`` sampled SDFs (the
model's units: the normalised SDF times the process's ``data_scale``), channel 1 the fraction of samples in which
the pixel is foreground (``sdf <= threshold``). :py:class:`common.transforms.SDFSamplesToMaskd` turns that summary
into the mask (mean SDF thresholded) and an uncertainty map. Images larger than ``roi_size`` are covered by
overlapping windows (MONAI's ``SlidingWindowInferer``), each sampled independently and blended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SlidingWindowInferer

from common.diffusion.samplers import SAMPLERS
from common.diffusion.sde import Network, Process

__all__ = ["SDFSamplingInferer"]


class SDFSamplingInferer(Inferer):
    """Sample SDFs conditioned on an image, several times, window by window.

    Args:
        process: the forward process the network was trained with (``common.diffusion.make_sde``).
        sampler: ``"pc"`` (predictor-corrector, VE only), ``"ancestral"`` (DDPM, VP only) or ``"ode"``
            (DPM-Solver++(2M), both processes).
        num_steps: predictor steps (``pc``; 200 in the paper) or network evaluations (``ode``); ignored by
            ``ancestral``, which runs every trained step.
        corrector_steps: Langevin corrector steps per predictor step (``pc`` only).
        snr: signal-to-noise ratio of the corrector (``pc`` only).
        num_samples: samples per image (K); their mean SDF gives the mask, their disagreement the uncertainty.
        threshold: a pixel is foreground where the SDF is ``<= threshold`` (``3 * sigma_min`` in the paper).
        roi_size: window size (the training patch); None samples the whole image at once.
        overlap: overlap of neighbouring windows.
        sw_batch_size: windows sampled together (times ``num_samples``).
        blend_mode: ``"gaussian"`` or ``"constant"`` weighting of overlapping windows.
        seed: seed of the sampling noise, reset for every call so an image's result does not depend on the images
            before it; None draws fresh noise.
    """

    def __init__(
        self,
        process: Process,
        sampler: str = "pc",
        num_steps: int = 200,
        corrector_steps: int = 1,
        snr: float = 0.15,
        num_samples: int = 1,
        threshold: float = 0.003,
        roi_size: Sequence[int] | int | None = None,
        overlap: float = 0.25,
        sw_batch_size: int = 4,
        blend_mode: str = "gaussian",
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r} (config key 'sampler'); valid names: {', '.join(SAMPLERS)}.")
        if num_steps < 1:
            raise ValueError(f"the sampler's number of steps must be >= 1 (config key 'num_steps'), got {num_steps}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1 (config key 'num_samples'), got {num_samples}.")
        expected = {"pc": "ve", "ancestral": "vp"}.get(sampler)
        if expected is not None and process.name != expected:
            raise ValueError(
                f"sampler {sampler!r} needs sde {expected!r}, got sde {process.name!r}; use sampler 'ode'."
            )
        self.process = process
        self.sampler = sampler
        self.sampler_kwargs: dict[str, Any] = {"num_steps": None if sampler == "ancestral" else num_steps}
        if sampler == "pc":
            self.sampler_kwargs.update(corrector_steps=corrector_steps, snr=snr)
        self.num_samples = num_samples
        self.threshold = threshold
        self.seed = seed
        self.roi_size = roi_size
        self.window = (
            None
            if roi_size is None
            else SlidingWindowInferer(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=blend_mode)
        )
        #: network evaluations of the last call, summed over its window batches (for benchmarks)
        self.last_nfe = 0

    def _check_size(self, inputs: torch.Tensor) -> None:
        if self.roi_size is None:
            return
        roi = [self.roi_size] * (inputs.ndim - 2) if isinstance(self.roi_size, int) else list(self.roi_size)
        if any(s < r for s, r in zip(inputs.shape[2:], roi, strict=True)):
            raise ValueError(
                f"image of size {list(inputs.shape[2:])} is smaller than the sampling window {roi} "
                "(config key 'patch_size'); resize or pad it first."
            )

    def _sample(self, condition: torch.Tensor, network: Network, generator: torch.Generator | None) -> torch.Tensor:
        """Summary ``(B, 2, ...)`` of ``num_samples`` samples for a batch of condition images (or windows)."""
        batch = condition.shape[0]
        repeated = condition.repeat_interleave(self.num_samples, dim=0)
        shape = (repeated.shape[0], 1, *repeated.shape[2:])
        x = self.process.prior_sample(shape, generator, device=repeated.device)
        counter = [0]
        sample = SAMPLERS[self.sampler](
            network, self.process, x, repeated, generator=generator, counter=counter, **self.sampler_kwargs
        )
        self.last_nfe += counter[0]
        samples = sample.reshape(batch, self.num_samples, *sample.shape[2:])
        foreground = (samples <= self.threshold).float()
        return torch.stack([samples.mean(dim=1), foreground.mean(dim=1)], dim=1)

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, network: Network, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Summary ``(B, 2, H, W)`` (mean SDF, foreground frequency) of the samples for images ``inputs``."""
        self._check_size(inputs)
        self.last_nfe = 0
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=inputs.device)
            generator.manual_seed(self.seed)
        if self.window is None:
            return self._sample(inputs, network, generator)
        return self.window(inputs, lambda windows: self._sample(windows, network, generator))
