"""One platform rule for both sides: `bundle build` and the importer's gate agree on every pair."""

import pytest

from bundlecore.platforms import platforms_match


@pytest.mark.parametrize("a, b, same", [
    ("linux/amd64", "linux/amd64", True),
    ("linux/arm64", "linux/arm64/v8", True),
    ("linux/arm64/v8", "linux/arm64", True),   # build refused this one before, the gate accepted it
    ("linux/arm/v7", "linux/arm/v7", True),
    ("linux/arm", "linux/arm/v7", True),
    ("linux/arm/v6", "linux/arm/v7", False),
    ("linux/arm64", "linux/amd64", False),
    ("linux/amd64", "windows/amd64", False),
    ("linux/amd64", "linux", False),
    ("linux/amd64", "linux/amd", False),
])
def test_platforms_match_compares_the_variant_only_when_both_name_one(a, b, same):
    assert platforms_match(a, b) is same
    assert platforms_match(b, a) is same
