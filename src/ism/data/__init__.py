"""Datasets, the pixel convention, toy distributions and the resumable batch order.

A study's real images (what training, encoding, the FID reference and the floor read) have one home,
:mod:`ism.data.real`; image files become pixels in one place, :mod:`ism.data.imagefiles` (reader, ADM crop, channels).
"""

from ism.data.batches import BatchSchedule
from ism.data.datasets import DATASETS, DataError, Dataset, Split, load_dataset
from ism.data.images import model_to_uint8, nchw_to_nhwc_uint8, uint8_to_model
from ism.data.toy import checkerboard, eight_gaussians, sliced_wasserstein2

__all__ = [
    "DATASETS",
    "BatchSchedule",
    "DataError",
    "Dataset",
    "Split",
    "checkerboard",
    "eight_gaussians",
    "load_dataset",
    "model_to_uint8",
    "nchw_to_nhwc_uint8",
    "sliced_wasserstein2",
    "uint8_to_model",
]
