"""CenterNet ("Objects as Points") detector."""
import os

# albumentations checks PyPI for a newer release at import; this package never wants that network call.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from detector.model import CenterNet  # noqa: E402
from detector.inference.detectors import Detector  # noqa: E402

__all__ = ["CenterNet", "Detector"]
