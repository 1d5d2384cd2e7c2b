# Type stub for the nanobind extension built from native/descriptor.cpp.
import numpy as np
import numpy.typing as npt

def describe(frame: npt.NDArray[np.uint8], thumb: npt.NDArray[np.float32]) -> float: ...
def mean_abs_diff_many(
    thumb: npt.NDArray[np.float32], bank: npt.NDArray[np.float32], out: npt.NDArray[np.float32]
) -> None: ...
