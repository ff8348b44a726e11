"""Data pipelines (installed as ``sdbnn.pipelines``): small real datasets for demos and tests."""

from sdbnn.pipelines.digits import DigitsSplit, load_digits_split

__all__ = ["DigitsSplit", "load_digits_split"]
