"""Networks that MONAI core does not have."""

from .postdae import PostDAE
from .score_unet import ScoreUNet

__all__ = ["PostDAE", "ScoreUNet"]
