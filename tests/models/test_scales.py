"""models.scales: the network input sides of --scales."""

from __future__ import annotations

import pytest

from models.flags import ScaleFlags
from models.scales import input_sides


def test_input_sides_round_dedupe_and_default() -> None:
    assert input_sides(256, []) == (256,)
    assert input_sides(256, [1, 2]) == (256, 512)
    assert input_sides(256, [1.5, 1, 1.0, 1.5]) == (384, 256)
    assert input_sides(100, [0.5]) == (50,)
    assert input_sides(512, [8]) == (4096,)
    assert ScaleFlags().scale_list() == [1.0] and ScaleFlags(scales=[2]).scale_list() == [2.0]


@pytest.mark.parametrize(("scales", "needle"), [([0], "(0, 8]"), ([-2], "(0, 8]"), ([8.5], "(0, 8]"),
                                                ([0.05], "13 pixels (--imgsz 256); it must be in 16..4096")])
def test_input_sides_refuse_bad_ratios_with_one_line(scales: list[float], needle: str) -> None:
    with pytest.raises(ValueError, match="--scales") as e:
        input_sides(256, scales)
    assert needle in str(e.value) and "\n" not in str(e.value)
