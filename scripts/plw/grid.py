"""How the experiment grid is spelled in paths: PLW values as the decimals written in the config."""

import numpy as np


def format_plw(plw: float) -> str:
    """0.0005 -> '0.0005' (never '5e-04'), 1.0 -> '1', 0 -> '0'; float(format_plw(x)) == x."""
    text = np.format_float_positional(float(plw), trim="-")
    assert float(text) == float(plw), (plw, text)
    return text
