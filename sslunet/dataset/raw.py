"""Reading a raw dataset in nnU-Net v2's format, plus our ``imagesUnlabeled/`` extension.

Layout (see ``dataset_conventions.md``)::

    DatasetXXX_Name/
      dataset.json          channel_names, labels, numTraining, file_ending
      imagesTr/CASE_0000<ending>   one file per channel, 4-digit channel index
      labelsTr/CASE<ending>
      imagesUnlabeled/CASE_0000<ending>   optional: images without labels (self-supervision)
      imagesTs/CASE_0000<ending>          optional: test images
      labelsTs/CASE<ending>               optional: test references (for evaluation)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sslunet.dataset.labels import ignore_problem
from sslunet.errors import InputError

SOURCES = ("imagesTr", "imagesUnlabeled", "imagesTs")
LABEL_FOLDERS = {"imagesTr": "labelsTr", "imagesTs": "labelsTs"}
SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
MAX_LABELS = 128  # preprocessed label maps are int8 (values 0..127; -1 marks outside the body)


@dataclass(frozen=True)
class RawCase:
    case_id: str
    source: str
    images: tuple[Path, ...]  # one per channel, in channel order
    label: Path | None


@dataclass(frozen=True)
class RawDataset:
    root: Path
    name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    num_training: int
    cases: tuple[RawCase, ...]
    # image files with another supported ending than ``file_ending`` (not part of the dataset)
    ignored_files: tuple[Path, ...] = ()

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def cases_from(self, *sources: str) -> list[RawCase]:
        return [c for c in self.cases if c.source in sources]

    @property
    def dataset_json_path(self) -> Path:
        return self.root / "dataset.json"


def read_dataset_json(root: Path) -> dict:
    """Parse and validate ``dataset.json``; every problem is an :class:`InputError`."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise InputError("dataset.json is missing", path)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", path) from None
    if not isinstance(meta, dict):
        raise InputError("must contain a JSON object", path)
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        if key not in meta:
            raise InputError(f"required key '{key}' is missing", path)
    channels, labels = meta["channel_names"], meta["labels"]
    if not isinstance(channels, dict) or not channels:
        raise InputError("'channel_names' must be a non-empty object like {\"0\": \"T2\"}", path)
    if sorted(channels) != sorted(str(i) for i in range(len(channels))):
        raise InputError("'channel_names' keys must be 0..C-1", path)
    for key, value in channels.items():
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"'channel_names' entry \"{key}\" must be a non-empty name such as "
                             f"\"T2\" (got {json.dumps(value)})", path)
    _check_labels(labels, path)
    if meta["file_ending"] not in SUPPORTED_ENDINGS:
        raise InputError(f"'file_ending' {meta['file_ending']!r} is not one of "
                         f"{', '.join(SUPPORTED_ENDINGS)}", path)
    num_training = meta["numTraining"]
    if not isinstance(num_training, int) or isinstance(num_training, bool) or num_training < 0:
        raise InputError(f"'numTraining' must be a non-negative integer (got "
                         f"{json.dumps(num_training)})", path)
    return meta


def _check_labels(labels, path: Path) -> None:
    """``labels``: name -> distinct integers 0..K-1 with 0 the background, K <= MAX_LABELS; an
    ``"ignore"`` label (sparse annotations) has the highest value."""
    if not isinstance(labels, dict) or not labels:
        raise InputError("'labels' must be a non-empty object mapping names to integers, "
                         "with \"background\": 0", path)
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            kind = "region labels (lists) are not supported" if isinstance(value, list) \
                else "label values must be integers"
            raise InputError(f"'labels' entry \"{name}\" is {json.dumps(value)}: {kind}", path)
        if value < 0:
            raise InputError(f"'labels' entry \"{name}\" is {value}: label values must be "
                             "non-negative", path)
    seen: dict[int, str] = {}
    for name, value in labels.items():
        if value in seen:
            raise InputError(f"'labels' entries \"{seen[value]}\" and \"{name}\" have the same "
                             f"value {value}", path)
        seen[value] = name
    if 0 not in seen:
        raise InputError(f"'labels' must contain the background with value 0 (values are "
                         f"consecutive integers from 0), got {sorted(seen)}", path)
    values = sorted(seen)
    if values != list(range(len(values))):
        raise InputError(f"'labels' values must be consecutive integers from 0 "
                         f"(background), got {values}", path)
    if len(values) > MAX_LABELS:
        raise InputError(f"{len(values)} labels: at most {MAX_LABELS} (values 0.."
                         f"{MAX_LABELS - 1}) are supported", path)
    if ignore_problem(labels):
        raise InputError(f"'labels': {ignore_problem(labels)}", path)


def _channel_files(folder: Path, ending: str, num_channels: int) -> dict[str, list[Path]]:
    """Group ``CASE_XXXX<ending>`` files by case; check every case has all channels."""
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    groups: dict[str, dict[int, Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(ending):
            continue
        m = pattern.match(f.name)
        if m is None:
            raise InputError(f"image file name must be CASE_XXXX{ending} (4-digit channel)", f)
        groups.setdefault(m["case"], {})[int(m["ch"])] = f
    out = {}
    for case, chans in groups.items():
        for ch in range(num_channels):
            if ch not in chans:
                raise InputError(f"image channel {ch:04d} of case '{case}' is missing",
                                 folder / f"{case}_{ch:04d}{ending}")
        extra = sorted(set(chans) - set(range(num_channels)))
        if extra:
            raise InputError(f"channel {extra[0]:04d} is not declared in dataset.json "
                             f"channel_names", chans[extra[0]])
        out[case] = [chans[ch] for ch in range(num_channels)]
    return out


def _cases_of(root: Path, source: str, ending: str, num_channels: int) -> list[RawCase]:
    folder = root / source
    if not folder.is_dir():
        return []
    images = _channel_files(folder, ending, num_channels)
    label_dir = root / LABEL_FOLDERS[source] if source in LABEL_FOLDERS else None
    labels: dict[str, Path] = {}
    if label_dir is not None and label_dir.is_dir():
        labels = {f.name[: -len(ending)]: f for f in sorted(label_dir.iterdir())
                  if f.name.endswith(ending) and not f.name.startswith(".")}
        for case, f in labels.items():
            if case not in images:
                raise InputError(f"label file has no image (expected {source}/"
                                 f"{case}_0000{ending})", f)
    cases = []
    for case, files in images.items():
        label = labels.get(case)
        if source == "imagesTr" and label is None:
            raise InputError(f"training image has no label (expected labelsTr/{case}{ending}; "
                             "put images without labels in imagesUnlabeled/)", files[0])
        cases.append(RawCase(case, source, tuple(files), label))
    return cases


def _other_endings(root: Path, ending: str) -> list[Path]:
    """Image files with another supported ending than ``ending`` in the dataset's folders.

    A folder that holds such files but none with ``ending`` means ``file_ending`` is wrong:
    that is an InputError saying which ending was expected and which were found.
    """
    ignored = []
    for sub in (*SOURCES, *LABEL_FOLDERS.values()):
        folder = root / sub
        if not folder.is_dir():
            continue
        names = [f.name for f in sorted(folder.iterdir()) if not f.name.startswith(".")]
        other = [n for n in names if not n.endswith(ending)
                 and any(n.endswith(e) and len(n) > len(e) for e in SUPPORTED_ENDINGS)]
        if other and not any(n.endswith(ending) for n in names):
            found = sorted({next(e for e in sorted(SUPPORTED_ENDINGS, key=len, reverse=True)
                                 if n.endswith(e)) for n in other})
            raise InputError(f"'file_ending' is {ending!r} but {sub}/ holds no such file; it "
                             f"holds {len(other)} file(s) ending in {', '.join(found)} (e.g. "
                             f"{other[0]}): correct 'file_ending' or the file names",
                             root / "dataset.json")
        ignored += [folder / n for n in other]
    return ignored


def load_raw_dataset(root: str | Path) -> RawDataset:
    """Read ``dataset.json`` and list every case; structural problems raise InputError."""
    root = Path(root)
    if root.is_file():
        raise InputError("is a file; give the dataset folder (the one holding dataset.json)",
                         root)
    if not root.is_dir():
        raise InputError("dataset folder does not exist", root)
    meta = read_dataset_json(root)
    ending, n_ch = meta["file_ending"], len(meta["channel_names"])
    ignored = _other_endings(root, ending)
    cases: list[RawCase] = []
    for source in SOURCES:
        cases += _cases_of(root, source, ending, n_ch)
    seen: dict[str, str] = {}
    for c in cases:
        if c.case_id in seen:
            raise InputError(f"case id '{c.case_id}' appears in both {seen[c.case_id]} and "
                             f"{c.source}", root / c.source)
        seen[c.case_id] = c.source
    n_tr = sum(c.source == "imagesTr" for c in cases)
    if n_tr != meta["numTraining"]:
        raise InputError(f"numTraining is {meta['numTraining']} but imagesTr holds {n_tr} "
                         "cases", root / "dataset.json")
    if not any(c.source in ("imagesTr", "imagesUnlabeled") for c in cases):
        raise InputError("dataset is empty: no images in imagesTr/ or imagesUnlabeled/", root)
    return RawDataset(root, root.name, dict(meta["channel_names"]), dict(meta["labels"]),
                      ending, meta["numTraining"], tuple(cases), tuple(ignored))
