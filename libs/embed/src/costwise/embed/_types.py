"""The vector type every backend returns."""

import numpy as np
from numpy.typing import NDArray

__all__ = ["DIMENSIONS", "Vector"]

DIMENSIONS = 384
Vector = NDArray[np.float32]
