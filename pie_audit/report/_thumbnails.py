"""Thumbnails of test examples for the report's PIE gallery, as PNG data URIs.

Images come from the dataset that the models' ``run.json`` names, and only when that dataset
is available here *and* its test split matches the recorded hash and the audited labels: a
mismatched dataset must never show the wrong pictures. When images cannot be shown, the
gallery shows ids and labels, and :attr:`Thumbnails.note` says why.

torch (through :mod:`pie_audit.data`) is imported only when a dataset is actually loaded, so
auditing predictions from another framework stays fast.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import PieAuditError

__all__ = [
    "THUMBNAIL_SIZE",
    "Thumbnails",
    "png_data_uri",
    "dataset_thumbnails",
    "check_images_file",
    "read_images",
    "file_thumbnails",
]

THUMBNAIL_SIZE = 64
NO_DATASET = "the models' run.json names no dataset, so the gallery shows ids and labels only"
NO_HASH = "run.json records no hash for dataset '{name}', so its images cannot be checked and are not shown"
UNAVAILABLE = "dataset '{name}' is not available here ({reason}); the gallery shows ids and labels only"
HASH_MISMATCH = (
    "the test split of dataset '{name}' found here has hash {found}, not the {expected} recorded in "
    "run.json; its images are not shown"
)
LABEL_MISMATCH = (
    "dataset '{name}' gives example {example_id} label {found}, but the predictions say {expected}; "
    "its images are not shown"
)
ID_OUT_OF_RANGE = "example id {example_id} is outside dataset '{name}' ({n} test examples); its images are not shown"


@dataclass(frozen=True)
class Thumbnails:
    """Images for some examples, or the reason there are none.

    Attributes
    ----------
    images : mapping of int to str
        ``data:image/png;base64,...`` URI per example id.
    note : str or None
        Why no image is shown; ``None`` when images were requested and found.
    """

    images: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    note: str | None = None


def png_data_uri(image: np.ndarray, *, size: int = THUMBNAIL_SIZE) -> str:
    """Encode one image as a small PNG data URI, min-max scaled to the full grey/colour range.

    Parameters
    ----------
    image : ndarray of shape (C, H, W) or (H, W)
        Any real values (e.g. normalised pixels); C is 1 (grey) or 3 (RGB).
    size : int
        Images larger than ``size`` pixels on a side are shrunk to fit; smaller ones are kept
        at their size (the page scales them up without smoothing).

    Returns
    -------
    str
    """
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    picture = Image.fromarray(np.round(255 * scaled).astype(np.uint8))
    if max(picture.size) > size:
        picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _dataset_record(runs: Iterable[Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    for run in runs:
        record = run.get("dataset") if isinstance(run, Mapping) else None
        if isinstance(record, Mapping) and isinstance(record.get("name"), str):
            return record
    return None


def dataset_thumbnails(
    runs: Iterable[Mapping[str, Any] | None],
    example_ids: np.ndarray,
    labels: np.ndarray,
    *,
    data_root: str | Path = "data",
    size: int = THUMBNAIL_SIZE,
) -> Thumbnails:
    """Thumbnails of the given test examples from the dataset the runs were evaluated on.

    Parameters
    ----------
    runs : iterable of (dict or None)
        ``run.json`` contents (e.g. ``AuditResult.baseline_runs.values()``); the first one
        with a ``dataset`` record names the dataset and its hash.
    example_ids : ndarray of shape (K,)
        The examples to draw: indices into the dataset's test split.
    labels : ndarray of shape (K,)
        Their labels according to the predictions; each must match the dataset's.
    data_root : path
        Where the dataset files are looked for (never downloaded).
    size : int
        Largest side of a thumbnail, in pixels.

    Returns
    -------
    Thumbnails
        With ``images`` for every id, or with none and a ``note`` saying why.
    """
    record = _dataset_record(runs)
    if record is None:
        return Thumbnails(note=NO_DATASET)
    name = record["name"]
    expected = record.get("hash")
    if not isinstance(expected, str):
        return Thumbnails(note=NO_HASH.format(name=name))
    from ..data import load_dataset

    try:
        # The task matters for a dataset with several (CelebA): its labels are part of the hash.
        target = record.get("target") if isinstance(record.get("target"), str) else None
        dataset = load_dataset(name, data_root=data_root, download=False, target=target)
    except PieAuditError as e:
        return Thumbnails(note=UNAVAILABLE.format(name=name, reason=e))
    test_labels = dataset.y_test.numpy()
    found = dataset.test_hash
    if found != expected:
        return Thumbnails(note=HASH_MISMATCH.format(name=name, found=found, expected=expected))
    n = len(test_labels)
    images = {}
    for example_id, label in zip(np.asarray(example_ids).tolist(), np.asarray(labels).tolist(), strict=True):
        if not 0 <= example_id < n:
            return Thumbnails(note=ID_OUT_OF_RANGE.format(example_id=example_id, name=name, n=n))
        if int(test_labels[example_id]) != label:
            return Thumbnails(
                note=LABEL_MISMATCH.format(
                    name=name, example_id=example_id, found=int(test_labels[example_id]), expected=label
                )
            )
        images[int(example_id)] = png_data_uri(dataset.x_test[example_id].numpy(), size=size)
    return Thumbnails(images=MappingProxyType(images))


#: Largest images file read (bytes): a gallery needs at most a few thousand small images.
MAX_IMAGES_BYTES = 2 * 1024**3
BAD_IMAGES = "{path}: not an images file ({reason}); expected an .npz with 'example_id' (N,) and 'images' (N, H, W), (N, C, H, W) or (N, H, W, C)"
NO_IMAGES_FILE = "{path}: no such images file"
#: open() on a FIFO blocks until something writes to it, and a device never ends: neither is read.
NOT_A_REGULAR_FILE = "{path}: not a regular file ({kind}); expected an .npz images file"
MISSING_IMAGES = "the images file {path} has no image for example {example_id}; the gallery shows ids and labels only"


def check_images_file(path: str | Path) -> None:
    """Refuse, without opening it, an images file that is missing or not a regular file.

    Raises
    ------
    FormatError
        :data:`NO_IMAGES_FILE`, or :data:`NOT_A_REGULAR_FILE` for a FIFO, a device, a socket or a
        directory (opening a FIFO blocks; a device never ends).
    """
    from ..errors import FormatError

    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows a link: what open() would open
    except FileNotFoundError as e:
        raise FormatError(NO_IMAGES_FILE.format(path=path)) from e
    except OSError as e:
        raise FormatError(BAD_IMAGES.format(path=path, reason=e.strerror or type(e).__name__)) from e
    if not stat.S_ISREG(mode):
        raise FormatError(NOT_A_REGULAR_FILE.format(path=path, kind=_kind(mode)))


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def read_images(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file: an ``.npz`` archive of ``example_id`` and ``images``.

    The format (``docs/interchange-format.md``): ``example_id``, integers of shape (N,), unique;
    ``images``, numbers of shape (N, H, W) (grey), (N, C, H, W) or (N, H, W, C) with C 1 or 3.
    Written by ``numpy.savez(path, example_id=ids, images=images)``. It is read without
    unpickling (``allow_pickle=False``).

    Returns
    -------
    example_ids : ndarray of shape (N,)
    images : ndarray of shape (N, C, H, W) or (N, H, W)
        Channels first.

    Raises
    ------
    FormatError
        Missing, not a regular file (:func:`check_images_file`), unreadable, pickled, too large,
        or of the wrong shape or type.
    """
    from ..errors import FormatError

    path = Path(path)
    check_images_file(path)
    try:
        if path.stat().st_size > MAX_IMAGES_BYTES:
            raise FormatError(BAD_IMAGES.format(path=path, reason="larger than 2 GiB"))
        # Our own file object, so that it is closed whatever numpy makes of its content; opened
        # without blocking and checked again, so that a FIFO put there since cannot hang us.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise FormatError(NOT_A_REGULAR_FILE.format(path=path, kind=_kind(mode)))
        with os.fdopen(fd, "rb") as fh:
            archive = np.load(fh, allow_pickle=False)
            if not hasattr(archive, "files"):
                raise FormatError(BAD_IMAGES.format(path=path, reason="a single array, not an archive"))
            with archive:
                missing = [key for key in ("example_id", "images") if key not in archive.files]
                if missing:
                    raise FormatError(BAD_IMAGES.format(path=path, reason=f"no array {missing[0]!r}"))
                ids, images = archive["example_id"], archive["images"]
    except FormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as e:
        raise FormatError(BAD_IMAGES.format(path=path, reason=str(e).splitlines()[0] or type(e).__name__)) from e
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise FormatError(BAD_IMAGES.format(path=path, reason=f"example_id has shape {ids.shape} and type {ids.dtype}"))
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise FormatError(BAD_IMAGES.format(path=path, reason=f"images of type {images.dtype}"))
    if images.shape[:1] != ids.shape or images.ndim not in (3, 4):
        raise FormatError(BAD_IMAGES.format(path=path, reason=f"images of shape {images.shape} for {ids.size} ids"))
    if images.ndim == 4:
        if images.shape[1] not in (1, 3):
            if images.shape[3] not in (1, 3):
                raise FormatError(BAD_IMAGES.format(path=path, reason=f"images of shape {images.shape}"))
            images = np.moveaxis(images, 3, 1)  # channels last -> first
    if np.unique(ids).size != ids.size:
        raise FormatError(BAD_IMAGES.format(path=path, reason="repeated example_id"))
    return ids.astype(np.int64), images


def file_thumbnails(path: str | Path, example_ids: np.ndarray, *, size: int = THUMBNAIL_SIZE) -> Thumbnails:
    """Thumbnails of the given examples from an images file (:func:`read_images`).

    Returns
    -------
    Thumbnails
        Every requested image, or none and a ``note`` naming the first missing one.
    """
    ids, images = read_images(path)
    position = {int(i): k for k, i in enumerate(ids.tolist())}
    found = {}
    for example_id in np.asarray(example_ids).tolist():
        if int(example_id) not in position:
            return Thumbnails(note=MISSING_IMAGES.format(path=path, example_id=example_id))
        found[int(example_id)] = png_data_uri(images[position[int(example_id)]], size=size)
    return Thumbnails(images=MappingProxyType(found))
