"""Shape arithmetic shared by layers whose sizes may be Python ints or scalar tensors."""


def ceil_div(a, b):
    """`ceil(a / b)` for positive sizes; exact on Python ints, also works on scalar tensors."""
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    return (a + b - 1) // b
