"""Shared package of the MONAI bundle collection for generative medical image segmentation and synthesis.

Every piece of logic that two bundles need lives here once; bundles reference it from their configs as
``"_target_": "common.<module>.<name>"``.
"""

__version__ = "0.1.0"
