"""On-disk format of one preprocessed case, shared by preprocessing, training and pretraining.

For a configuration folder ``PREPROCESSED/<dataset>/<data_identifier>/`` each case has

- ``CASE.npy``: float32 image, shape (C, *spatial), transposed, cropped, normalised, resampled;
- ``CASE_seg.npy``: int8 label map, shape (1, *spatial); absent for unlabeled and test images.
  Voxels outside the nonzero mask of the crop are -1 (as in nnU-Net), so loss code must map
  them to background (0) or ignore them;
- ``CASE.json``: :class:`CaseProperties`, written *last*: a case counts as done only when its
  properties file exists, so a killed run never leaves a half-written case that looks finished.

Arrays are plain ``.npy`` so loaders can open them with ``mmap_mode='r'`` and read a random
patch without loading the whole volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sslunet.errors import InputError
from sslunet.paths import Paths
from sslunet.plans import Plans
from sslunet.utils.atomic import read_json, save_npy, write_json
from sslunet.utils.serialization import from_dict, to_dict

CASE_PROPERTIES_VERSION = 1


# class_locations key of the annotated voxels of a sparsely labelled case (see CaseProperties)
ANNOTATED_KEY = "annotated"

@dataclass(frozen=True)
class CaseProperties:
    """Everything needed to invert the preprocessing of one case.

    Geometry fields prefixed ``sitk_`` are in SimpleITK's (x, y, z) order, exactly as read from
    the original file; ``original_shape`` and ``bbox`` are in numpy (z, y, x) order of the
    original array, *before* transposition; ``shape_after_crop`` and ``shape_after_resample``
    and the spacings are in transposed order.
    """

    case_id: str
    source: str  # "imagesTr", "imagesUnlabeled" or "imagesTs"
    sitk_spacing: tuple[float, ...]
    sitk_origin: tuple[float, ...]
    sitk_direction: tuple[float, ...]
    original_shape: tuple[int, ...]
    bbox: tuple[tuple[int, int], ...]
    shape_after_crop: tuple[int, ...]
    spacing: tuple[float, ...]
    target_spacing: tuple[float, ...]
    shape_after_resample: tuple[int, ...]
    has_seg: bool
    # label value -> up to N voxel coordinates (transposed, resampled space) for foreground
    # oversampling; keys are strings because JSON object keys are. With an ignore label,
    # ANNOTATED_KEY lists annotated voxels (any class but ignore).
    class_locations: dict[str, list[list[int]]] = field(default_factory=dict)
    schema_version: int = CASE_PROPERTIES_VERSION


def case_paths(folder: Path, case_id: str) -> tuple[Path, Path, Path]:
    folder = Path(folder)
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


def is_case_done(folder: Path, case_id: str) -> bool:
    data, _, props = case_paths(folder, case_id)
    return data.exists() and props.exists()


def save_case(
    folder: Path, data: np.ndarray, seg: np.ndarray | None, props: CaseProperties
) -> None:
    """Write one case atomically; the properties file goes last and marks completion."""
    data_p, seg_p, props_p = case_paths(folder, props.case_id)
    if props_p.exists():  # overwriting: un-mark first so a kill cannot pair old props/new data
        props_p.unlink()
    save_npy(data_p, data.astype(np.float32, copy=False))
    if seg is not None:
        save_npy(seg_p, seg.astype(np.int8, copy=False))
    elif seg_p.exists():
        seg_p.unlink()
    write_json(props_p, to_dict(props), compact=True)


def load_properties(folder: Path, case_id: str) -> CaseProperties:
    return from_dict(CaseProperties, read_json(case_paths(folder, case_id)[2]))


def load_class_locations(folder: Path, case_id: str) -> dict[str, list[list[int]]]:
    """Only ``CaseProperties.class_locations`` of a case, as stored (label -> ``[[z, y, x], ..]``).

    Patch samplers read these for every case in every worker; building the whole dataclass
    converts each stored coordinate field by field, ~0.1 s per case of 6000 voxels (issue 12
    profile: half the augmentation time of a CMR batch until every case was cached).
    """
    return read_json(case_paths(folder, case_id)[2]).get("class_locations", {})


def load_case(
    folder: Path, case_id: str, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Return ``(data (C, *spatial) float32, seg (1, *spatial) int8 or None, properties)``."""
    data_p, seg_p, _ = case_paths(folder, case_id)
    mode = "r" if mmap else None
    data = np.load(data_p, mmap_mode=mode)
    seg = np.load(seg_p, mmap_mode=mode) if seg_p.exists() else None
    return data, seg, load_properties(folder, case_id)


def list_cases(folder: Path, sources: tuple[str, ...] | None = None) -> list[str]:
    """Finished case ids in ``folder``, sorted; optionally only those from ``sources``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ids = sorted(p.stem for p in folder.glob("*.json"))
    ids = [i for i in ids if (folder / f"{i}.npy").exists()]
    if sources is None:
        return ids
    return [i for i in ids if load_properties(folder, i).source in sources]


def preprocessed_dir(paths: Paths, dataset: str) -> Path:
    d = paths.preprocessed / dataset
    if not (d / "plans.json").exists():
        raise InputError(f"dataset {dataset} is not planned yet (run: sslunet_plan -d {dataset})",
                         d / "plans.json")
    return d


def load_plans(paths: Paths, dataset: str) -> Plans:
    return Plans.load(preprocessed_dir(paths, dataset) / "plans.json")
