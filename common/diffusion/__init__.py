"""Forward processes (VE SDE, VP/DDPM), samplers (predictor-corrector, ancestral, DPM-Solver++ ODE), inferers."""

from .inferer import SDFSamplingInferer
from .samplers import SAMPLERS, ancestral_sample, dpmpp_2m_sample, pc_sample
from .sde import SDE_NAMES, VESDE, VPSDE, Process, make_sde, truncated_normal

__all__ = [
    "SAMPLERS",
    "SDE_NAMES",
    "VESDE",
    "VPSDE",
    "Process",
    "SDFSamplingInferer",
    "ancestral_sample",
    "dpmpp_2m_sample",
    "make_sde",
    "pc_sample",
    "truncated_normal",
]
