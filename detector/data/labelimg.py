"""labelImg's Pascal VOC mode: one XML per photo, beside it in one folder or in a folder of their own; no
``ImageSets``, no ``Annotations/``.

The photos are the image files directly in the folder (sorted by name); the XML of ``a.jpg`` is ``a.xml`` in the XML
folder (the photo folder unless given). The XML itself is Pascal VOC, read by :mod:`detector.data.voc` (1-based
coordinates converted once there, ``difficult`` objects as crowd). A photo with no XML is unlabelled: left out and
counted (:attr:`LabelImgDetection.unlabelled`), or kept as a negative (a photo with no object) with
``unlabelled="negatives"``. Classes: the given list, else the sorted object names of all the XMLs. Image ids as in
the VOC reader (numeric stems, else ``0..n-1``). The whole folder is one split: the data module holds a validation
split out of it (``detector.data.split``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from detector.data.dataset import Annotation, BoxRepairs, DetectionDataset, Sample
from detector.data.voc import _check_classes, _image_ids, _object_names, _parse_xml, read_voc_annotation
from detector.data.yolo import IMAGE_SUFFIXES, image_size
from detector.errors import DatasetError

Unlabelled = Literal["skip", "negatives"]


def folder_photos(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of photos")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def photo_xmls(folder: Path, xml_dir: Path | None = None) -> list[tuple[Path, Path | None]]:
    """``(photo, its xml or None)`` for every photo of ``folder``."""
    xml_dir = Path(xml_dir) if xml_dir is not None else folder
    if not xml_dir.is_dir():
        raise DatasetError(f"--data.xml_dir {xml_dir}: not a folder")
    pairs = []
    for photo in folder_photos(folder):
        xml = xml_dir / f"{photo.stem}.xml"
        pairs.append((photo, xml if xml.is_file() else None))
    if not any(xml for _, xml in pairs):
        raise DatasetError(f"{folder}: {len(pairs)} photos and no labelImg XML beside them (in {xml_dir}); give "
                           "the XML folder with --data.xml_dir")
    return pairs


def labelimg_classes(pairs: list[tuple[Path, Path | None]]) -> list[str]:
    """The sorted object names of all the XMLs (a :class:`DatasetError` when there is none)."""
    names = {name for _, xml in pairs if xml is not None for name in _object_names(xml)}
    if not names:
        folder = next(xml for _, xml in pairs if xml is not None).parent
        raise DatasetError(f"{folder}: no object in any XML, so no class list; pass --data.classes")
    return sorted(names)


class LabelImgDetection(DetectionDataset):
    """The photos of a labelImg folder and their XMLs (layout and rules in the module docstring).

    Args:
        folder: the photo folder. xml_dir: the XML folder, when it is not ``folder``.
        transform: applied to each :class:`Sample`. classes: class names, index = label (``None``: the XMLs').
        unlabelled: ``"skip"`` leaves photos without XML out; ``"negatives"`` keeps them, with no object.
    """

    def __init__(self, folder: str | Path, xml_dir: str | Path | None = None,
                 transform: Callable[[Sample], Any] | None = None, classes: Sequence[str] | None = None,
                 unlabelled: Unlabelled = "skip"):
        folder = Path(folder)
        if unlabelled not in ("skip", "negatives"):
            raise DatasetError(f"--data.unlabelled {unlabelled!r}: must be skip or negatives")
        pairs = photo_xmls(folder, Path(xml_dir) if xml_dir else None)
        classes = _check_classes(classes) if classes is not None else labelimg_classes(pairs)
        self.unlabelled = sum(xml is None for _, xml in pairs)
        kept = [(photo, xml) for photo, xml in pairs if xml is not None or unlabelled == "negatives"]
        repairs, annotations = BoxRepairs(), []
        for (photo, xml), image_id in zip(kept, _image_ids([photo.stem for photo, _ in kept])):
            if xml is None:
                annotation = _negative(photo, image_id)
            else:
                annotation, found = read_voc_annotation(_parse_xml(xml), xml, photo, image_id, classes)
                repairs.add(found)
            if annotation is not None:
                annotations.append(annotation)
        source = str(folder)
        repairs.warn(source)
        super().__init__(annotations, classes, list(range(1, len(classes) + 1)), source, transform)

    def unlabelled_message(self, kept: bool) -> str | None:
        """The one line about photos without XML (``None`` when every photo has one)."""
        if not self.unlabelled:
            return None
        what = ("kept as negatives (no object)" if kept else
                "left out (--data.unlabelled negatives trains them as photos with no object)")
        return f"unlabelled: {self.unlabelled} photos of {self.source} have no XML; {what}"


def _negative(photo: Path, image_id: int) -> Annotation | None:
    """A photo with no object (its size from the file header); ``None`` when the size cannot be read."""
    size = image_size(photo)
    if size is None:
        return None
    empty = np.zeros((0, 4), dtype=np.float32)
    return Annotation(file=photo, image_id=image_id, boxes=empty, labels=np.zeros((0,), np.int64),
                      crowd_boxes=empty.copy(), crowd_labels=np.zeros((0,), np.int64), width=size[0],
                      height=size[1])
