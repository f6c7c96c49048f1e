"""The pixel layout every reader shares and the Block every reader returns: pixels
(n, 784) uint8 with bad records zero-filled, labels (n,) or None, and errors {record index:
reason}. Nothing is dropped silently."""
from dataclasses import dataclass, field

import numpy as np

from model import network

N_PIXELS = network.N_IN
SIDE = network.SIDE
PIXEL_COLUMNS = [f"pixel{i}" for i in range(N_PIXELS)]
TRAIN_COLUMNS = ["label"] + PIXEL_COLUMNS


@dataclass
class Block:
    """Records read from one range of an input."""

    pixels: np.ndarray  # (n, 784) uint8, zero rows where errors holds a reason
    labels: np.ndarray | None  # (n,) int64 for labeled data
    errors: dict = field(default_factory=dict)  # record index within the block -> reason
    notes: dict = field(default_factory=dict)  # record index -> what was done to it ("inverted ...")

    def __len__(self):
        return self.pixels.shape[0]

    def ok_mask(self):
        """(n,) bool: True for the good records."""
        mask = np.ones(len(self), bool)
        mask[list(self.errors)] = False
        return mask


