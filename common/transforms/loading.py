"""Loading image files with errors that name the file: MONAI's reader errors often do not."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.data import ImageReader
from monai.transforms import LoadImaged

__all__ = ["CheckedLoadImaged"]


class CheckedLoadImaged(LoadImaged):
    """MONAI's ``LoadImaged`` whose read errors name the key and the file that failed.

    A truncated PNG fails inside PIL with "image file is truncated", without a file name; with thousands of files in
    a datalist the user could not tell which one to fix. Arguments are those of ``LoadImaged``.
    """

    def __call__(self, data: Mapping[Hashable, Any], reader: ImageReader | None = None) -> dict[Hashable, Any]:
        try:
            return super().__call__(data, reader)
        except Exception as err:
            for key in self.key_iterator(dict(data)):
                try:
                    self._loader(data[key], reader)
                except Exception as key_err:
                    reason = str(key_err).strip().splitlines()[0] if str(key_err).strip() else type(key_err).__name__
                    raise ValueError(
                        f"cannot read the file(s) of key '{key}': {data[key]} ({reason}); expected a readable, "
                        "complete image (NIfTI, PNG/JPEG/TIFF or a DICOM series folder)."
                    ) from key_err
            raise err
