"""Real photographs for tests, taken from registry packages (never from ../shared/data).

grace_hopper.jpg ships with matplotlib (mpl-data/sample_data): the official US Navy portrait of
Rear Admiral Grace Hopper, a work of the US federal government and so in the public domain.
"""

import cv2
import matplotlib
import numpy as np

GRACE_HOPPER = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"


def grace_hopper_rgb() -> np.ndarray:
    """The 512x600 portrait as an RGB uint8 array; her face is roughly at x 160-380, y 100-330."""
    return cv2.cvtColor(cv2.imread(GRACE_HOPPER), cv2.COLOR_BGR2RGB)
