import pytest

from sparc.mathutil import add, clamp, mean


@pytest.mark.parametrize("a,b,expected", [(1, 2, 3), (0, 0, 0), (-1, 1, 0), (2.5, 0.5, 3.0), (10, -3, 7)])
def test_add(a, b, expected):
    assert add(a, b) == expected


@pytest.mark.parametrize("values,expected", [([1], 1), ([1, 2, 3], 2), ([2, 4], 3), ([-1, 1], 0)])
def test_mean(values, expected):
    assert mean(values) == expected


def test_mean_empty():
    with pytest.raises(ValueError):
        mean([])


@pytest.mark.parametrize("value,expected", [(5, 5), (-5, 0), (50, 10), (0, 0), (10, 10)])
def test_clamp(value, expected):
    assert clamp(value, 0, 10) == expected
