"""Small arithmetic helpers with exact behaviour the tests pin down."""


def add(a, b):
    return a + b


def mean(values):
    if not values:
        raise ValueError("mean of nothing")
    return sum(values) / len(values)


def clamp(value, low, high):
    return max(low, min(high, value))
