"""Flag config keys given on the command line: 'false' must not be a true (non-empty) string."""

from __future__ import annotations

import pytest

from common.bundle import as_bool, bool_list


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("false", False), ("True", True), ("0", False), (1, True)]
)
def test_as_bool_reads_command_line_spellings(value: object, expected: bool) -> None:
    assert as_bool(value, "flag") is expected


def test_as_bool_and_bool_list_name_the_key() -> None:
    with pytest.raises(ValueError, match="wavelet_discriminator"):
        as_bool("maybe", "wavelet_discriminator")
    assert bool_list(["false", True, "1"], "flags") == [False, True, True]
    with pytest.raises(ValueError, match="flags"):
        bool_list(["yes"], "flags")
    with pytest.raises(ValueError, match="flags"):
        bool_list("true", "flags")
