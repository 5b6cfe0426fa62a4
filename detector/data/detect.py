"""Which dataset a folder (or file) holds, from what is in it: ``tools/train.py --data.root FOLDER`` with no
``--data.dataset`` on the command line.

The layouts recognised, as the labelling tools write them (:func:`detect_dataset`):

========================================  =========================================================  ==========
what is there                             written by                                                 read as
========================================  =========================================================  ==========
``*.yaml`` / ``*.yml`` (or that file)     ultralytics, Roboflow YOLOv5/v8/v11, CVAT Ultralytics YOLO   yolo
``obj.data`` (or that file)               CVAT YOLO 1.1 (darknet)                                    yolo
``classes.txt`` + ``labels/``             Label Studio YOLO                                          yolo
``annotations/instances_*.json``          COCO itself, CVAT COCO 1.0                                 coco
``*/_annotations.coco.json``              Roboflow COCO                                              coco
``result.json`` (or any ``.json`` file)   Label Studio COCO, a COCO-format json of your own          coco
``Annotations/`` ``JPEGImages/`` ...      a VOC folder, CVAT Pascal VOC 1.1; a VOCdevkit             voc
``*.xml`` beside photos                   labelImg (Pascal VOC mode)                                 voc
========================================  =========================================================  ==========

A folder showing two of these is refused in one line that lists them (give ``--data.dataset`` and, if needed, the
file as ``--data.root``); a folder showing none, or a path that does not exist, is refused with what it holds. So
``--data.root FOLDER`` alone never trains on the synthetic set (a config's ``dataset: synthetic`` is only the default
of a command line without ``--data.root``) and never writes into FOLDER; a synthetic cache folder itself (only
``v1-seed0-train400-val100/``-like sets in it) keeps the config's dataset. :func:`with_detected_dataset` turns
the command line into the reader's options and prints one line naming what was found and which files give the
training and validation images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detector.data.dataset import note
from detector.data.synthetic import is_synthetic_cache
from detector.data.yolo import IMAGE_SUFFIXES, has_split, load_yolo_config, resolve_entry
from detector.errors import DatasetError

HELP_FLAGS = ("-h", "--help")
COCO_TRAIN_SUBSETS = ("train2017", "train", "default")
COCO_VAL_SUBSETS = ("val2017", "val", "validation", "valid")
ROBOFLOW_JSON = "_annotations.coco.json"


@dataclass
class Found:
    """A recognised dataset: the reader (``dataset``), its ``--data.*`` options, and what to say about it."""

    dataset: str
    options: dict[str, str]
    what: str
    train: str
    val: str | None  # None: held out of the training images
    extra: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """The ``--data.*`` command-line options of this dataset (a COCO dataset's unused paths set to null, over a
        config's or a checkpoint's)."""
        args = ["--data.dataset", self.dataset]
        unset = {"root", "train_json", "train_images", "val_json", "val_images"} - set(self.options)
        options = {**({key: "null" for key in sorted(unset)} if self.dataset == "coco" else {}), **self.options}
        for key, value in options.items():
            args += [f"--data.{key}", value]
        return args

    def message(self) -> str:
        """The one line that says what was found and where train and validation come from."""
        val = self.val or "held out of the training images by a hash of each file name (--data.val_fraction)"
        return f"data: {self.what} (--data.dataset {self.dataset}): train {self.train}; validation {val}"


def detect_dataset(path: str | Path, xml_dir: str | None = None) -> Found:
    """What ``path`` holds (see the module docstring); a :class:`DatasetError` for nothing or more than one."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"--data.root {path}: does not exist")
    if xml_dir:
        return _labelimg(path, xml_dir)
    if path.is_file():
        return _from_file(path)
    candidates = [found for found in (_yaml(path), _darknet(path), _label_studio_yolo(path), _coco_annotations(path),
                                      _roboflow_coco(path), _json_file(path), _voc(path)) if found is not None]
    if len(candidates) > 1:
        seen = "; ".join(found.what for found in candidates)
        raise DatasetError(f"{path}: more than one dataset here ({seen}); choose one with --data.dataset "
                           "(and give its file as --data.root)")
    if not candidates:
        raise DatasetError(f"{path}: no dataset recognised ({_contents(path)}); expected a dataset YAML, obj.data, "
                           "classes.txt with labels/, COCO json(s), a VOC folder or photos with labelImg XMLs (XMLs in "
                           "another folder: add --data.xml_dir FOLDER); see README 'Your own data'")
    return candidates[0]


def with_detected_dataset(args: list[str]) -> list[str]:
    """``args`` with the dataset detected when ``--data.root`` is given and ``--data.dataset`` is not (and no help
    is asked); prints the one line of :meth:`Found.message`."""
    root = argument_value(args, "--data.root")
    if root is None or argument_value(args, "--data.dataset") is not None or set(HELP_FLAGS) & set(args):
        return args
    if is_synthetic_cache(root):
        return args
    found = detect_dataset(root, argument_value(args, "--data.xml_dir"))
    note(found.message())
    for line in found.extra:
        note(line)
    return _without(args, "--data.root") + found.arguments()


def json_data_name(train_json: str | Path) -> str:
    """The name of a COCO-format dataset for its run and check folders: the json's stem, or, for a labelling
    tool's fixed name (``instances_<subset>``, ``_annotations.coco``, ``result``), the export folder's name."""
    path = Path(train_json).resolve()
    if not (path.stem.startswith("instances_") or path.name in (ROBOFLOW_JSON, "result.json")):
        return path.stem
    folder = path.parent
    if folder.name == "annotations" or path.name == ROBOFLOW_JSON and folder.name in ("train", "valid", "test"):
        folder = folder.parent
    return folder.name


def argument_value(args: list[str], name: str) -> str | None:
    """The value given to ``name`` on a command line (``--name VALUE`` or ``--name=VALUE``), or None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _without(args: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _from_file(path: Path) -> Found:
    if path.suffix in (".yaml", ".yml", ".data"):
        return _yolo_found(path, "darknet obj.data" if path.suffix == ".data" else f"YOLO dataset YAML {path.name}")
    if path.suffix == ".json":
        return _coco_json(path, path.parent, f"COCO-format json {path.name}")
    raise DatasetError(f"--data.root {path}: not a dataset file (a YOLO .yaml, a darknet obj.data or a COCO .json); "
                       "or give the folder that holds the dataset")


def _yolo_found(source: Path, what: str) -> Found:
    config = load_yolo_config(source)
    folder = source if source.is_dir() else source.parent
    root = folder / str(config["path"]) if config.get("path") else folder

    def where(split: str) -> str | None:
        if not has_split(config, split):
            return None
        value = config.get(split) or config.get("validation")
        entries = value if isinstance(value, list) else [value]
        return ", ".join(str(resolve_entry(str(entry), root, folder)) for entry in entries)

    return Found("yolo", {"root": str(source)}, f"{what} ({len(config['names'])} classes)", where("train") or "?",
                 where("val"))


def _yaml(folder: Path) -> Found | None:
    yamls = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not yamls:
        return None
    chosen = next((p for p in yamls if p.stem == "data"), yamls[0] if len(yamls) == 1 else None)
    if chosen is None:
        raise DatasetError(f"{folder}: {len(yamls)} YAML files ({', '.join(p.name for p in yamls)}); give the "
                           "dataset YAML itself as --data.root")
    return _yolo_found(chosen, f"YOLO dataset YAML {chosen.name}")


def _darknet(folder: Path) -> Found | None:
    data = folder / "obj.data"
    return _yolo_found(data, "darknet obj.data (CVAT YOLO 1.1)") if data.is_file() else None


def _label_studio_yolo(folder: Path) -> Found | None:
    if (folder / "classes.txt").is_file() and (folder / "labels").is_dir() and (folder / "images").is_dir():
        return _yolo_found(folder, "YOLO folder with classes.txt, images/, labels/ (Label Studio YOLO)")
    return None


def _coco_annotations(folder: Path) -> Found | None:
    """``annotations/instances_<subset>.json``: COCO itself (``train2017``, ``val2017``) or CVAT (``default``)."""
    jsons = sorted((folder / "annotations").glob("instances_*.json"))
    if not jsons:
        return None
    subsets = {p.stem.removeprefix("instances_"): p for p in jsons}
    if {"train2017", "val2017"} <= set(subsets) and (folder / "train2017").is_dir():
        return Found("coco", {"root": str(folder)}, "COCO (annotations/instances_*2017.json)",
                     str(subsets["train2017"]), str(subsets["val2017"]))
    train = next((s for s in COCO_TRAIN_SUBSETS if s in subsets), next(iter(subsets)) if len(subsets) == 1 else None)
    if train is None:
        raise DatasetError(f"{folder / 'annotations'}: no training json among {sorted(subsets)} (expected "
                           f"instances_train.json or instances_default.json); give --data.train_json")
    options = {"train_json": str(subsets[train]), "train_images": str(_subset_images(folder, train))}
    val = next((s for s in COCO_VAL_SUBSETS if s in subsets), None)
    if val is not None:
        options.update(val_json=str(subsets[val]), val_images=str(_subset_images(folder, val)))
    return Found("coco", options, "COCO jsons in annotations/ (COCO, CVAT COCO 1.0)", str(subsets[train]),
                 str(subsets[val]) if val else None)


def _subset_images(folder: Path, subset: str) -> Path:
    """The image folder of a subset: ``images/<subset>/``, ``<subset>/``, ``images/``, else the folder itself."""
    return next((c for c in (folder / "images" / subset, folder / subset, folder / "images") if c.is_dir()), folder)


def _roboflow_coco(folder: Path) -> Found | None:
    """``train/_annotations.coco.json``, ``valid/...`` (``test/`` unused), each beside its images."""
    jsons = {p.parent.name: p for p in sorted(folder.glob(f"*/{ROBOFLOW_JSON}"))}
    if (folder / ROBOFLOW_JSON).is_file():
        jsons.setdefault(".", folder / ROBOFLOW_JSON)
    if not jsons:
        return None
    train = next((s for s in ("train", ".") if s in jsons), next(iter(jsons)) if len(jsons) == 1 else None)
    if train is None:
        raise DatasetError(f"{folder}: {ROBOFLOW_JSON} in {sorted(jsons)} but none in train/; give --data.train_json")
    options = {"train_json": str(jsons[train]), "train_images": str(jsons[train].parent)}
    val = next((s for s in ("valid", "val", "validation") if s in jsons), None)
    if val is not None:
        options.update(val_json=str(jsons[val]), val_images=str(jsons[val].parent))
    return Found("coco", options, f"Roboflow COCO ({ROBOFLOW_JSON} per split)", str(jsons[train]),
                 str(jsons[val]) if val else None)


def _json_file(folder: Path) -> Found | None:
    """Label Studio's ``result.json`` (``file_name`` holding ``images/x.jpg``), or the one ``.json`` of a folder (not
    Label Studio's ``notes.json``, nor Roboflow's, which :func:`_roboflow_coco` reads: a split folder given itself)."""
    jsons = sorted(p for p in folder.glob("*.json") if p.name not in ("notes.json", ROBOFLOW_JSON))
    chosen = folder / "result.json" if (folder / "result.json").is_file() else jsons[0] if len(jsons) == 1 else None
    if chosen is None or (folder / "classes.txt").is_file():
        return None
    what = "Label Studio COCO result.json" if chosen.name == "result.json" else f"COCO-format json {chosen.name}"
    return _coco_json(chosen, folder, what)


def _coco_json(path: Path, images: Path, what: str) -> Found:
    return Found("coco", {"train_json": str(path), "train_images": str(images)}, what, str(path), None)


def _voc(folder: Path) -> Found | None:
    if all((folder / sub).is_dir() for sub in ("Annotations", "JPEGImages", "ImageSets/Main")):
        from detector.data.voc import default_voc_splits

        main = folder / "ImageSets" / "Main"
        train, val = (default_voc_splits(folder, stage) for stage in ("train", "val"))
        return Found("voc", {"root": str(folder)}, "VOC folder (Annotations/, JPEGImages/, ImageSets/Main/; CVAT "
                     "Pascal VOC 1.1)", str(main / f"{train[0]}.txt"), str(main / f"{val[0]}.txt") if val else None)
    if any(path.is_dir() for path in folder.glob("VOC*/ImageSets/Main")):
        return Found("voc", {"root": str(folder)}, "VOCdevkit", "VOC2007+2012 trainval", "VOC2007 test")
    if any(folder.glob("*.xml")):
        return _labelimg(folder, None)
    return None


def _labelimg(folder: Path, xml_dir: str | None) -> Found:
    from detector.data.labelimg import photo_xmls

    pairs = photo_xmls(folder, Path(xml_dir) if xml_dir else None)
    labelled = sum(xml is not None for _, xml in pairs)
    options = {"root": str(folder)}
    where = "beside them" if not xml_dir else f"in {xml_dir}"
    if xml_dir:
        options["xml_dir"] = str(xml_dir)
    return Found("voc", options, f"labelImg folder ({len(pairs)} photos, {labelled} with an XML {where})",
                 f"the labelled photos of {folder}", None)


def _contents(folder: Path) -> str:
    """A short account of a folder: its image count and its other entries."""
    entries = sorted(folder.iterdir())
    images = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
    others = [p.name + ("/" if p.is_dir() else "") for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]
    shown = ", ".join(others[:8]) + (" ..." if len(others) > 8 else "")
    return f"{images} images" + (f" and {shown}" if shown else "") if entries else "it is empty"
