"""Networks that MONAI core does not have."""

from .postdae import PostDAE

__all__ = ["PostDAE"]
