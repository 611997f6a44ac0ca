"""Checks of loaded images (channels, finite values, size, grid) and loading: conversions that match OpenCV's grey
reading, errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.transforms import (
    CheckedLoadImaged,
    EnsureChannelsd,
    EnsureFinited,
    EnsureMinSized,
    EnsureSameSpatialShaped,
)


def _image(channels: int, size: tuple[int, int] = (6, 5), name: str = "/data/tile_07.png") -> MetaTensor:
    values = torch.arange(channels * size[0] * size[1], dtype=torch.float32).reshape(channels, *size) % 256
    return MetaTensor(values, meta={"filename_or_obj": name})


def test_rgb_to_grey_uses_bt601_luma() -> None:
    image = _image(3)
    grey = EnsureChannelsd("image", channels=1)({"image": image})["image"]
    expected = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    assert grey.shape == (1, 6, 5)
    torch.testing.assert_close(torch.as_tensor(grey)[0], torch.as_tensor(expected))


def test_rgba_drops_alpha() -> None:
    image = _image(4)
    rgb = EnsureChannelsd("image", channels=3)({"image": image})["image"]
    torch.testing.assert_close(torch.as_tensor(rgb), torch.as_tensor(image[:3]))
    grey = EnsureChannelsd("image", channels=1)({"image": image})["image"]
    assert grey.shape[0] == 1


def test_matching_channels_pass_unchanged() -> None:
    image = _image(1)
    assert EnsureChannelsd("image", channels=1)({"image": image})["image"] is image


def test_grey_is_repeated_when_rgb_is_asked() -> None:
    image = _image(1)
    rgb = EnsureChannelsd("image", channels=3)({"image": image})["image"]
    assert rgb.shape[0] == 3 and all(torch.equal(torch.as_tensor(c), torch.as_tensor(image[0])) for c in rgb)


@pytest.mark.parametrize(("have", "want"), [(2, 1), (2, 3), (5, 3)])
def test_wrong_channel_count_names_file_and_key(have: int, want: int) -> None:
    with pytest.raises(ValueError, match=rf"tile_07.png.*{have} channel.*expected {want}.*'image_channels'"):
        EnsureChannelsd("image", channels=want)({"image": _image(have)})


def test_unsupported_channel_setting() -> None:
    with pytest.raises(ValueError, match="image_channels must be an int >= 1"):
        EnsureChannelsd("image", channels=0)


def test_multi_contrast_channels_are_checked_not_converted() -> None:
    data = {"image": _image(4, (8, 8))}
    assert EnsureChannelsd("image", channels=4)(data)["image"] is data["image"]
    with pytest.raises(ValueError, match="expected 4"):
        EnsureChannelsd("image", channels=4)({"image": _image(3, (8, 8))})


def test_min_size_accepts_equal_and_larger() -> None:
    data = {"image": _image(1, (128, 200))}
    assert EnsureMinSized("image", min_size=(128, 128))(data)["image"] is data["image"]


@pytest.mark.parametrize("size", [(100, 200), (200, 127)])
def test_small_image_names_file_and_key(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"tile_07.png.*smaller than \[128, 128\].*'patch_size'"):
        EnsureMinSized("image", min_size=128)({"image": _image(1, size)})


def test_plain_arrays_are_named_by_key() -> None:
    with pytest.raises(ValueError, match="'image' \\(key 'image'\\)"):
        EnsureMinSized("image", min_size=8)({"image": np.zeros((1, 4, 4))})


def test_same_spatial_shape_passes_matching_pairs_and_names_both_files() -> None:
    image = MetaTensor(torch.zeros(3, 8, 8), meta={"filename_or_obj": "img/a.png"})
    check = EnsureSameSpatialShaped(keys=["image", "label"])
    same = {"image": image, "label": MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "lab/a.png"})}
    assert check(same)["label"] is same["label"], "channel counts may differ; only the spatial shape is checked"
    other = {"image": image, "label": MetaTensor(torch.zeros(1, 8, 6), meta={"filename_or_obj": "lab/a.png"})}
    with pytest.raises(ValueError, match=r"lab/a\.png.*\[8, 6\].*img/a\.png.*\[8, 8\]"):
        check(other)


def test_same_grid_also_compares_affines_within_tolerance() -> None:
    image, label = _image(1), _image(1, name="/data/tile_07_mask.nii.gz")
    shifted = torch.eye(4, dtype=torch.float64)
    shifted[0, 3] = 0.5
    label.affine = shifted
    with pytest.raises(ValueError, match=r"tile_07_mask.nii.gz.*affine.*same grid"):
        EnsureSameSpatialShaped(["image", "label"])({"image": image, "label": label})
    shifted[0, 3] = 1e-5  # float32 rounding of a stored affine is no mismatch
    label.affine = shifted
    EnsureSameSpatialShaped(["image", "label"])({"image": image, "label": label})
    plain = {"image": image, "label": torch.zeros(1, 6, 5)}  # no affine: the shape alone is compared
    EnsureSameSpatialShaped(["image", "label"])(plain)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_intensities_are_counted_and_the_file_named(bad: float) -> None:
    image = _image(3)
    image[1, 2, 3] = bad
    image[0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"image '/data/tile_07.png' \(key 'image'\) has 2 NaN or infinite value"):
        EnsureFinited("image")({"image": image})


def test_finite_and_integer_images_pass_unchanged() -> None:
    image = _image(1)
    assert EnsureFinited("image")({"image": image})["image"] is image
    integer = torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3)
    assert EnsureFinited("image")({"image": integer})["image"] is integer


def test_checked_loader_names_the_key_and_file_that_fail(tmp_path) -> None:
    from PIL import Image

    good, truncated, text = tmp_path / "good.png", tmp_path / "truncated.png", tmp_path / "notes.png"
    Image.fromarray(np.full((20, 24), 7, np.uint8)).save(good)
    truncated.write_bytes(good.read_bytes()[:40])
    text.write_text("not an image")
    loader = CheckedLoadImaged(["image", "label"], image_only=True)
    assert loader({"image": str(good), "label": str(good)})["image"].shape == (24, 20)  # PIL reader: (W, H)
    for bad in (truncated, text):
        with pytest.raises(ValueError, match=rf"key 'label': {bad} .*expected a readable, complete image"):
            loader({"image": str(good), "label": str(bad)})
