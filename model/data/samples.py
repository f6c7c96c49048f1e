"""The small real sample shipped in the package, written out in the users' formats."""
import os
from importlib.resources import files

import numpy as np
from PIL import Image

from model.data.block import PIXEL_COLUMNS, SIDE, TRAIN_COLUMNS


def load_sample():
    """The sample as arrays: {"train_x" (2500, 784), "train_y", "test_x" (500, 784), "test_y"}."""
    with files("model.data").joinpath("sample/sample.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def write_csv(path, header, rows):
    """Write a header and integer rows (N, K) as a CSV file."""
    with open(path, "w", newline="") as f:
        f.write(",".join(header) + "\n")
        f.write("".join(",".join(map(str, r)) + "\n" for r in rows.tolist()))


def write_sample(out, images=True):
    """Write the sample under folder `out` -> dict of the paths written.

    train.csv (labeled), test.csv (unlabeled), test_labels.csv (ImageId,Label of test.csv),
    and with images=True: images/train/<digit>/<n>.png and images/test/<n>.png.
    """
    s = load_sample()
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, k + ".csv") for k in ("train", "test", "test_labels")}
    write_csv(paths["train"], TRAIN_COLUMNS, np.column_stack([s["train_y"], s["train_x"]]))
    write_csv(paths["test"], PIXEL_COLUMNS, s["test_x"])
    ids = np.arange(1, len(s["test_y"]) + 1)
    write_csv(paths["test_labels"], ["ImageId", "Label"], np.column_stack([ids, s["test_y"]]))
    if images:
        root = os.path.join(out, "images")
        for d in range(10):
            os.makedirs(os.path.join(root, "train", str(d)), exist_ok=True)
        os.makedirs(os.path.join(root, "test"), exist_ok=True)
        for i, (x, y) in enumerate(zip(s["train_x"], s["train_y"])):
            Image.fromarray(x.reshape(SIDE, SIDE), "L").save(os.path.join(root, "train", str(y), f"{i:05d}.png"))
        for i, x in enumerate(s["test_x"]):
            Image.fromarray(x.reshape(SIDE, SIDE), "L").save(os.path.join(root, "test", f"{i:05d}.png"))
        paths["images_train"] = os.path.join(root, "train")
        paths["images_test"] = os.path.join(root, "test")
    return paths
