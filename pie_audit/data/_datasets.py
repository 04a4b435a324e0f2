"""Datasets, loaded whole into tensors.

pie-audit trains many small models on the same data, so every dataset is held in memory as
normalised ``float32`` tensors of shape ``(N, C, H, W)`` that a trainer can move to its device
once. Example ids are indices into the test split, stable across runs and models.

CelebA is the one dataset with a *target*: its task is one of its 40 binary attributes
(:data:`CELEBA_DEFAULT_TARGET` unless told), and the other attributes of its test images travel
with it (:attr:`Dataset.attributes`), for the audit's groups.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, DatasetError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "Dataset",
    "DATASETS",
    "TARGETED",
    "DEBIAN_FASHION_MNIST",
    "DIGITS_TEST_FRACTION",
    "DIGITS_SPLIT_SEED",
    "CELEBA_ATTRIBUTES",
    "CELEBA_DEFAULT_TARGET",
    "CELEBA_IMAGE_SIZE",
    "load_dataset",
    "resolve_target",
    "dataset_hash",
    "UNKNOWN_TARGET",
    "NO_TARGET",
    "CELEBA_MISSING",
    "MAX_DATA_FILE_BYTES",
    "LABEL_OUT_OF_RANGE",
    "LABEL_COUNT",
    "DATA_FILE_TOO_LARGE",
    "NOT_A_DATA_FILE",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: The digits split: 25% of each class held out for test, with this seed (documented, fixed).
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

#: The largest dataset file read whole into memory (a CIFAR-10 batch, a Fashion-MNIST IDX file,
#: unpacked): CIFAR-10's batches are 31 MB, Fashion-MNIST's training images 47 MB.
MAX_DATA_FILE_BYTES = 256 * 1024**2

LABEL_OUT_OF_RANGE = (
    "{path}: {split} label {value} is out of range; {dataset} has {count} classes, labelled 0 to {last}"
)
LABEL_COUNT = "{path}: {images} images but {labels} labels"
DATA_FILE_TOO_LARGE = "{path}: more than the {limit} bytes pie-audit reads from a dataset file"
NOT_A_DATA_FILE = "{path}: not a regular file"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset held in memory.

    Attributes
    ----------
    name : str
        Registry name (``digits``, ``fashion-mnist``, ``cifar10``).
    classes : tuple of str
        Class names indexed by label.
    x_train, x_test : Tensor of shape (N, C, H, W), float32
        Normalised images.
    y_train, y_test : Tensor of shape (N,), int64
        Labels.
    split : str
        How the train/test split was made.
    augment : bool
        Whether training should use random crops and flips (CIFAR-style).
    target : str or None
        For a dataset whose task is chosen (:data:`TARGETED`: CelebA), the attribute its labels
        are; ``None`` for datasets with fixed classes. Recorded in ``population.json`` and
        ``run.json``, so that the same task is loaded again.
    attributes : DataFrame or None
        The test split's other attributes, one row per test example in ``example_ids`` order:
        ``example_id`` (int64) and one bool column per attribute but the target. Written as a
        population's ``groups.parquet``; ``None`` for datasets without attributes.
    """

    name: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    split: str
    augment: bool = False
    target: str | None = None
    attributes: pd.DataFrame | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def example_ids(self) -> np.ndarray:
        """Ids of the test examples: their index in the test split."""
        return np.arange(len(self.y_test), dtype=np.int64)

    @cached_property
    def test_hash(self) -> str:
        """:func:`dataset_hash` of the test split (ids, labels, images): ``run.json``'s ``dataset.hash``.

        Computed once per dataset and read by everything that records or checks it.
        """
        return dataset_hash(self.example_ids, self.y_test.numpy(), self.x_test)

    @cached_property
    def test_label_hash(self) -> str:
        """:func:`dataset_hash` of the test split's ids and labels only, as records before images had."""
        return dataset_hash(self.example_ids, self.y_test.numpy())

    @cached_property
    def train_hash(self) -> str:
        """:func:`dataset_hash` of the training split, as ``population.json`` records it."""
        return dataset_hash(np.arange(len(self.y_train), dtype=np.int64), self.y_train.numpy(), self.x_train)


#: Hashed first when images are covered, so that the two layouts can never give the same hash.
_HASH_LAYOUT = b"pie-audit/dataset-hash/2\0"


def dataset_hash(
    example_ids: np.ndarray, labels: np.ndarray, images: np.ndarray | torch.Tensor | None = None
) -> str:
    """SHA-256 of a split's examples, to tell whether two runs saw the same data.

    Parameters
    ----------
    example_ids : ndarray of shape (N,)
        Integer ids (for a test split, the ids its predictions carry).
    labels : ndarray of shape (N,)
        Integer labels.
    images : ndarray or Tensor of shape (N, ...), optional
        The inputs as the models see them, after preprocessing; hashed with their shape as
        little-endian ``float32``. Without them the hash covers ids and labels only, as
        pie-audit's records did before they covered images: kept to recognise such records.

    Returns
    -------
    str
        ``"sha256:"`` followed by 64 hex digits.

    Notes
    -----
    The preprocessing is exact (:func:`_standardise`), so the same files give the same hash on
    every machine, whatever its number of threads. SHA-256 runs at 1 to 2 GB/s: all of
    Fashion-MNIST (70,000 images, 220 MB of ``float32``) hashes in about 0.15 s.

    Examples
    --------
    >>> ids, labels = np.arange(2), np.array([1, 0])
    >>> images = np.zeros((2, 1, 2, 2), dtype=np.float32)
    >>> dataset_hash(ids, labels, images) == dataset_hash(ids, labels, images + 1)
    False
    """
    ids = np.ascontiguousarray(example_ids, dtype="<i8")
    targets = np.ascontiguousarray(labels, dtype="<i8")
    h = hashlib.sha256()
    if images is None:
        h.update(ids.tobytes())
        h.update(targets.tobytes())
        return "sha256:" + h.hexdigest()
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    pixels = np.ascontiguousarray(images, dtype="<f4")
    h.update(_HASH_LAYOUT)
    h.update(np.asarray(pixels.shape, dtype="<i8").tobytes())
    h.update(ids.tobytes())
    h.update(targets.tobytes())
    h.update(memoryview(pixels).cast("B"))  # no copy of the images
    return "sha256:" + h.hexdigest()


#: Images processed at once by :func:`_standardise`: bounds its temporary memory (~50 MB for CIFAR).
_CHUNK = 2048


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise integer pixels per channel with the training split's mean and std.

    Parameters
    ----------
    train : ndarray of shape (N, C, H, W)
    test : ndarray of shape (M, C, H, W)
        Integer pixel values.

    Returns
    -------
    x_train, x_test : Tensor of shape (N, C, H, W) and (M, C, H, W), float32

    Notes
    -----
    The statistics come from the training split only, so test data never leaks into training.
    They are exact, from integer sums: a parallel float reduction rounds differently with the
    number of threads, and the stored images (hence :func:`dataset_hash`) must be the same on
    every machine. Each value is then computed in float64 and rounded once to float32, which
    IEEE arithmetic does the same everywhere. A constant channel is only centred.
    """
    if not (np.issubdtype(train.dtype, np.integer) and np.issubdtype(test.dtype, np.integer)):
        raise TypeError(f"pixels must be integers, got {train.dtype} and {test.dtype}")
    channels = train.shape[1]
    n = train.shape[0] * train.shape[2] * train.shape[3]
    totals, squares = [0] * channels, [0] * channels
    for first in range(0, len(train), _CHUNK):
        chunk = train[first : first + _CHUNK].astype(np.int64)
        for c in range(channels):
            totals[c] += int(chunk[:, c].sum())
            squares[c] += int(np.square(chunk[:, c]).sum())
    mean = np.array([float(Fraction(t, n)) for t in totals]).reshape(1, -1, 1, 1)
    # The unbiased variance, exactly: (n * sum(x^2) - sum(x)^2) / (n (n - 1)).
    std = np.array(
        [
            math.sqrt(float(Fraction(n * q - t * t, n * (n - 1)))) if n > 1 else 0.0
            for t, q in zip(totals, squares)
        ]
    ).reshape(1, -1, 1, 1)
    std[std == 0] = 1.0

    def scale(x: np.ndarray) -> torch.Tensor:
        out = np.empty(x.shape, dtype=np.float32)
        for first in range(0, len(x), _CHUNK):
            out[first : first + _CHUNK] = (x[first : first + _CHUNK] - mean) / std
        return torch.from_numpy(out)

    return scale(train), scale(test)


def _check_labels(where: Path | str, labels: np.ndarray, *, split: str, dataset: str, count: int) -> None:
    """Refuse labels that are not class indices ``0 .. count - 1`` (:data:`LABEL_OUT_OF_RANGE`).

    ``where`` names the file the labels came from (or the dataset when there is none); a label
    out of range would otherwise fail deep inside training, or be audited as a class that is not.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    bad = (labels < 0) | (labels >= count)
    if bad.any():
        value = labels[int(np.argmax(bad))]
        message = LABEL_OUT_OF_RANGE.format(path=where, split=split, value=value, dataset=dataset, count=count,
                                            last=count - 1)  # fmt: skip
        raise DatasetError(message)


def _read_whole(path: Path, *, gzipped: bool = False) -> bytes:
    """A dataset file's bytes (unpacked, for ``gzipped``), at most :data:`MAX_DATA_FILE_BYTES` of them.

    Checked before reading: a FIFO or a device named as a dataset file would block or never end.
    """
    try:
        info = path.stat()
        if not path.is_file():
            raise DatasetError(NOT_A_DATA_FILE.format(path=path))
        if info.st_size > MAX_DATA_FILE_BYTES:
            raise DatasetError(DATA_FILE_TOO_LARGE.format(path=path, limit=MAX_DATA_FILE_BYTES))
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            content = fh.read(MAX_DATA_FILE_BYTES + 1)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing") from e
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot be read ({e})") from e
    if len(content) > MAX_DATA_FILE_BYTES:
        raise DatasetError(DATA_FILE_TOO_LARGE.format(path=path, limit=MAX_DATA_FILE_BYTES))
    return content


def _load_digits(data_root: Path, download: bool) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    x_train, x_test = _standardise(x_tr[:, None], x_te[:, None])
    return Dataset(
        name="digits",
        classes=tuple(str(d) for d in range(10)),
        x_train=x_train,
        y_train=torch.from_numpy(y_tr),
        x_test=x_test,
        y_test=torch.from_numpy(y_te),
        split=f"sklearn load_digits, stratified train_test_split(test_size={DIGITS_TEST_FRACTION}, "
        f"random_state={DIGITS_SPLIT_SEED})",
    )


_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) with torchvision's parser."""
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    import tempfile

    content = _read_whole(path, gzipped=path.suffix == ".gz")
    try:
        # torchvision's parser reads a file by name: the checked bytes, unpacked, are what it reads.
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(content)
            tmp.flush()
            return read_sn3_pascalvincent_tensor(tmp.name, strict=False).numpy()
    except (OSError, EOFError, ValueError, AssertionError, KeyError, RuntimeError, IndexError) as e:
        raise DatasetError(f"{path}: not a readable IDX file ({e})") from e


def _fashion_mnist_dir(data_root: Path) -> Path | None:
    candidates = [
        data_root / "fashion-mnist",
        data_root / "FashionMNIST" / "raw",
        data_root,
        DEBIAN_FASHION_MNIST,
    ]
    for d in candidates:
        if all(_find_idx(d, stem) for stem in _FMNIST_FILES.values()):
            return d
    return None


def _load_fashion_mnist(data_root: Path, download: bool) -> Dataset:
    directory = _fashion_mnist_dir(data_root)
    if directory is None and download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(data_root), train=True, download=True)
            FashionMNIST(str(data_root), train=False, download=True)
        except Exception as e:  # network errors come in many types
            raise DatasetError(f"fashion-mnist: download into {data_root} failed ({e})") from e
        directory = _fashion_mnist_dir(data_root)
    if directory is None:
        raise DatasetError(
            f"fashion-mnist: IDX files not found in {data_root}/fashion-mnist, "
            f"{data_root}/FashionMNIST/raw or {DEBIAN_FASHION_MNIST}; install the Debian package "
            "'dataset-fashion-mnist' or pass --download"
        )
    files = {k: _find_idx(directory, v) for k, v in _FMNIST_FILES.items()}
    arrays = {k: _read_idx(path) for k, path in files.items()}  # type: ignore[arg-type]
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DatasetError(f"{directory}: {part} split has {n_img} images but {n_lab} labels")
        _check_labels(files[f"{part}_labels"], arrays[f"{part}_labels"], split=part, dataset="fashion-mnist",
                      count=len(FASHION_MNIST_CLASSES))  # fmt: skip
    x_train, x_test = _standardise(arrays["train_images"][:, None], arrays["test_images"][:, None])
    return Dataset(
        name="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
        x_train=x_train,
        y_train=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        x_test=x_test,
        y_test=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        split=f"standard Fashion-MNIST train/test (t10k) split, read from {directory}",
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds the plain containers and numpy arrays CIFAR batches hold.

    CIFAR-10's python format is pickled; a restricted unpickler keeps a crafted file from running
    code (torchvision's loader uses plain ``pickle.load``).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _read_cifar_batch(path: Path) -> dict:
    content = _read_whole(path)
    try:
        batch = _CifarUnpickler(io.BytesIO(content), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, RecursionError) as e:  # fmt: skip
        raise DatasetError(f"{path}: not a CIFAR-10 batch file ({e})") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: not a CIFAR-10 batch file (a pickled {type(batch).__name__}, not a dict)")
    return batch


def _load_cifar10(data_root: Path, download: bool) -> Dataset:
    base = data_root / "cifar-10-batches-py"
    if not base.is_dir() and download:
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(data_root), train=True, download=True)
        except Exception as e:  # network errors come in many types
            raise DatasetError(f"cifar10: download into {data_root} failed ({e})") from e
    if not base.is_dir():
        raise DatasetError(f"cifar10: {base} not found; pass --download or --data-root")

    # The class names first: every batch's labels are checked against them.
    classes = CIFAR10_CLASSES
    meta = base / "batches.meta"
    if meta.is_file():
        names = _read_cifar_batch(meta).get("label_names")
        if names:
            if not isinstance(names, (list, tuple)):
                raise DatasetError(f"{meta}: label_names is a {type(names).__name__}, not a list of class names")
            classes = tuple(str(n) for n in names)

    def read(names: list[str], split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            batch = _read_cifar_batch(base / n)
            try:
                x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(batch["labels"], dtype=np.int64)
            except (KeyError, ValueError, TypeError, OverflowError) as e:
                raise DatasetError(f"{base / n}: not a CIFAR-10 batch ({e})") from e
            if y.ndim != 1 or len(y) != len(x):
                raise DatasetError(LABEL_COUNT.format(path=base / n, images=len(x), labels=y.size))
            _check_labels(base / n, y, split=split, dataset="cifar10", count=len(classes))
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = read([f"data_batch_{i}" for i in range(1, 6)], "train")
    x_te, y_te = read(["test_batch"], "test")
    x_train, x_test = _standardise(x_tr, x_te)
    return Dataset(
        name="cifar10",
        classes=classes,
        x_train=x_train,
        y_train=torch.from_numpy(y_tr),
        x_test=x_test,
        y_test=torch.from_numpy(y_te),
        split=f"standard CIFAR-10 train/test split, read from {base}",
        augment=True,
    )


#: CelebA's 40 binary attributes, in the order of ``list_attr_celeba.txt``.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
#: The task of Hooker et al.'s "Characterising Bias in Compressed Models" (arXiv 2010.03058).
CELEBA_DEFAULT_TARGET = "Blond_Hair"
#: Side of the square CelebA images the models see. The aligned faces are 178x218: their centre
#: square (178x178, the face and most of the hair) is resized to 64x64, the usual "CelebA-64" of
#: the generative-model literature. Small enough that the 162,770 training images fit in memory
#: as float32 (8 GB) and a CPU test trains in seconds, large enough to see hair colour.
CELEBA_IMAGE_SIZE = 64
#: torchvision's layout (``torchvision.datasets.CelebA``'s ``base_folder``): ``ROOT/celeba/``.
CELEBA_FOLDER = "celeba"
CELEBA_IMAGES = "img_align_celeba"
CELEBA_ATTRIBUTE_FILE = "list_attr_celeba.txt"
CELEBA_PARTITION_FILE = "list_eval_partition.txt"
#: ``list_eval_partition.txt``'s partitions: 0 trains, 2 tests; 1 (validation) is not read.
CELEBA_TRAIN, CELEBA_VALIDATION, CELEBA_TEST = 0, 1, 2
#: Images decoded at once by each thread of :func:`_read_celeba_images`.
_IMAGE_CHUNK = 256

UNKNOWN_TARGET = "unknown target {target!r} for {dataset}; choose one of its attributes: {choices}"
NO_TARGET = "{dataset} has fixed classes and takes no target (datasets with a target: {choices})"
CELEBA_MISSING = (
    "celeba: {path} not found; pie-audit never downloads CelebA: put torchvision's CelebA files "
    "({images}/, {attributes}, {partitions}) in {base}"
)
CELEBA_BAD_LINE = "{path}: line {line}: {problem}"
CELEBA_COUNT = "{path}: line 1 says {count} images, but the file lists {found}"
CELEBA_DUPLICATE = "{path}: {image} is listed twice (lines {first} and {second})"
CELEBA_NO_ATTRIBUTES = "{path}: no attributes for {image}, which {partitions} puts in partition {partition}"
CELEBA_EMPTY = "{path}: partition {partition} ({split}) lists no image"
CELEBA_NO_IMAGE = "celeba: {path} not found ({partitions} lists it)"
CELEBA_BAD_IMAGE = "celeba: {path} is not a readable image ({reason})"

#: Datasets whose task is one binary attribute chosen by ``target``: their attributes, and the
#: default target.
TARGETED: dict[str, tuple[tuple[str, ...], str]] = {"celeba": (CELEBA_ATTRIBUTES, CELEBA_DEFAULT_TARGET)}


def resolve_target(name: str, target: str | None = None) -> str | None:
    """The target that dataset ``name`` is loaded with, checked before any file is read.

    Parameters
    ----------
    name : str
        A dataset name (:data:`DATASETS`).
    target : str, optional
        The attribute to predict; only for :data:`TARGETED` datasets, where it defaults to
        theirs (CelebA: :data:`CELEBA_DEFAULT_TARGET`).

    Returns
    -------
    str or None
        The target; ``None`` for a dataset with fixed classes.

    Raises
    ------
    ConfigError
        :data:`UNKNOWN_TARGET` (listing the attributes) or :data:`NO_TARGET`.

    Examples
    --------
    >>> resolve_target("celeba"), resolve_target("celeba", "Male"), resolve_target("digits")
    ('Blond_Hair', 'Male', None)
    """
    if name not in TARGETED:
        if target is not None:
            raise ConfigError(NO_TARGET.format(dataset=name, choices=", ".join(TARGETED)))
        return None
    attributes, default = TARGETED[name]
    if target is None:
        return default
    if target not in attributes:
        raise ConfigError(UNKNOWN_TARGET.format(target=target, dataset=name, choices=", ".join(attributes)))
    return target


def _celeba_table(path: Path, *, header: bool) -> tuple[list[str], pd.DataFrame]:
    """Read one of CelebA's whitespace-separated lists, as ``torchvision.datasets.CelebA`` does.

    ``list_attr_celeba.txt`` (``header``) opens with the image count and the attribute names,
    then has one line per image: its file name and one ``-1`` or ``1`` per attribute.
    ``list_eval_partition.txt`` has no header: a file name and a partition (0, 1 or 2) a line.

    Returns
    -------
    columns : list of str
        The value columns (the attributes, or ``["partition"]``).
    frame : DataFrame
        ``image`` (str) and the value columns (int64), in the file's order.
    """
    import pandas as pd

    if not path.is_file():
        raise DatasetError(
            CELEBA_MISSING.format(path=path, images=CELEBA_IMAGES, attributes=CELEBA_ATTRIBUTE_FILE,
                                  partitions=CELEBA_PARTITION_FILE, base=path.parent)
        )  # fmt: skip
    skip = 0
    count = None
    columns = ["partition"]
    if header:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first, second = fh.readline(), fh.readline()
        try:
            count = int(first.strip())
        except ValueError:
            problem = f"expected the number of images, not {first.strip()[:40]!r}"
            raise DatasetError(CELEBA_BAD_LINE.format(path=path, line=1, problem=problem)) from None
        columns = second.split()
        if not columns or len(set(columns)) != len(columns):
            problem = "expected the attribute names, distinct and separated by spaces"
            raise DatasetError(CELEBA_BAD_LINE.format(path=path, line=2, problem=problem))
        skip = 2
    try:
        frame = pd.read_csv(
            path, sep=r"\s+", header=None, skiprows=skip, names=["image", *columns], dtype={"image": str},
            engine="c", skip_blank_lines=True, encoding="utf-8", encoding_errors="replace",
        )  # fmt: skip
    except (pd.errors.ParserError, ValueError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise DatasetError(f"{path}: not a CelebA list ({reason})") from e
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        allowed = (-1, 1) if header else (CELEBA_TRAIN, CELEBA_VALIDATION, CELEBA_TEST)
        bad = ~values.isin(allowed).to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            value = frame[column].iloc[row]
            what = f"{column} is {value}" if not pd.isna(value) else f"no value for {column}"
            expected = "-1 or 1" if header else "0, 1 or 2"
            problem = f"{frame['image'].iloc[row]}: {what}, expected {expected}"
            raise DatasetError(CELEBA_BAD_LINE.format(path=path, line=skip + row + 1, problem=problem))
        frame[column] = values.astype(np.int64)
    if count is not None and count != len(frame):
        raise DatasetError(CELEBA_COUNT.format(path=path, count=count, found=len(frame)))
    repeated = frame["image"].duplicated(keep=False).to_numpy()
    if repeated.any():
        image = frame["image"].iloc[int(np.argmax(repeated))]
        first, second = np.flatnonzero((frame["image"] == image).to_numpy())[:2]
        raise DatasetError(
            CELEBA_DUPLICATE.format(path=path, image=image, first=skip + first + 1, second=skip + second + 1)
        )
    return columns, frame


def _celeba_image(path: Path, size: int) -> np.ndarray:
    """One image as ``(3, size, size)`` uint8: its centre square, resized (bilinear, antialiased)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(CELEBA_NO_IMAGE.format(path=path, partitions=CELEBA_PARTITION_FILE)) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(CELEBA_BAD_IMAGE.format(path=path, reason=e)) from e
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # Cropped first: resize(box=...) would let the filter read rows outside the square.
    square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)


def _read_celeba_images(directory: Path, names: Sequence[str], size: int) -> np.ndarray:
    """Decode ``names`` from ``directory`` into ``(N, 3, size, size)`` uint8, with threads.

    Pillow releases the GIL while it decodes and resamples, so threads decode in parallel; each
    image lands in its own row, so the result does not depend on the number of threads.
    """
    out = np.empty((len(names), 3, size, size), dtype=np.uint8)

    def decode(first: int) -> None:
        for i in range(first, min(first + _IMAGE_CHUNK, len(names))):
            out[i] = _celeba_image(directory / names[i], size)

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(decode, first) for first in range(0, len(names), _IMAGE_CHUNK)]
        try:
            for future in futures:
                future.result()  # the first failing chunk, in order, raises its error
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return out


def _load_celeba(data_root: Path, download: bool, target: str | None = None) -> Dataset:
    """CelebA in torchvision's layout under ``data_root/celeba``; never downloaded (``download`` is ignored).

    Train is partition 0, test partition 2, each in the order of ``list_eval_partition.txt``
    (example id ``i`` is the ``i``-th test image listed). The validation partition 1 is not
    read: pie-audit tunes nothing on held-out data, so it is left to whoever tunes the recipe.
    """
    import pandas as pd

    target = resolve_target("celeba", target)
    base = data_root / CELEBA_FOLDER
    attributes_file, partition_file = base / CELEBA_ATTRIBUTE_FILE, base / CELEBA_PARTITION_FILE
    images = base / CELEBA_IMAGES
    if not images.is_dir():
        raise DatasetError(
            CELEBA_MISSING.format(path=images, images=CELEBA_IMAGES, attributes=CELEBA_ATTRIBUTE_FILE,
                                  partitions=CELEBA_PARTITION_FILE, base=base)
        )  # fmt: skip
    names, attributes = _celeba_table(attributes_file, header=True)
    if target not in names:
        raise ConfigError(UNKNOWN_TARGET.format(target=target, dataset="celeba", choices=", ".join(names)))
    _, partitions = _celeba_table(partition_file, header=False)
    attributes = attributes.set_index("image")
    splits = {}
    for partition, split in ((CELEBA_TRAIN, "train"), (CELEBA_TEST, "test")):
        files = partitions.loc[partitions["partition"] == partition, "image"].tolist()
        if not files:
            raise DatasetError(CELEBA_EMPTY.format(path=partition_file, partition=partition, split=split))
        unknown = ~pd.Index(files).isin(attributes.index)
        if unknown.any():
            image = files[int(np.argmax(unknown))]
            raise DatasetError(
                CELEBA_NO_ATTRIBUTES.format(path=attributes_file, image=image, partitions=CELEBA_PARTITION_FILE,
                                            partition=partition)
            )  # fmt: skip
        splits[split] = (files, attributes.loc[files])
    logger.info("celeba: decoding %d images from %s", sum(len(f) for f, _ in splits.values()), images)
    (train_files, train_attributes), (test_files, test_attributes) = splits["train"], splits["test"]
    x_train, x_test = _standardise(
        _read_celeba_images(images, train_files, CELEBA_IMAGE_SIZE),
        _read_celeba_images(images, test_files, CELEBA_IMAGE_SIZE),
    )
    others = [n for n in names if n != target]
    groups = pd.DataFrame({"example_id": np.arange(len(test_files), dtype=np.int64)})
    for name in others:
        groups[name] = test_attributes[name].to_numpy() == 1
    return Dataset(
        name="celeba",
        classes=(f"not {target}", target),
        x_train=x_train,
        y_train=torch.from_numpy((train_attributes[target].to_numpy() == 1).astype(np.int64)),
        x_test=x_test,
        y_test=torch.from_numpy((test_attributes[target].to_numpy() == 1).astype(np.int64)),
        split=f"CelebA's list_eval_partition.txt: train = partition 0 ({len(train_files)} images), "
        f"test = partition 2 ({len(test_files)}), validation (1) not read; centre square resized to "
        f"{CELEBA_IMAGE_SIZE}x{CELEBA_IMAGE_SIZE}; read from {base}",
        augment=True,
        target=target,
        attributes=groups,
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "celeba": _load_celeba,
}


def load_dataset(
    name: str, *, data_root: str | Path = "data", download: bool = False, target: str | None = None
) -> Dataset:
    """Load a dataset by registry name.

    Parameters
    ----------
    name : {"digits", "fashion-mnist", "cifar10", "celeba"}
        Dataset name.
    data_root : path, default "data"
        Where to look for (and, with ``download``, put) dataset files. CelebA is read from
        ``data_root/celeba`` in torchvision's layout and never downloaded.
    download : bool, default False
        Allow downloading through torchvision when the files are not found locally.
    target : str, optional
        CelebA's task: the attribute to predict (default :data:`CELEBA_DEFAULT_TARGET`); refused
        for the datasets with fixed classes (:func:`resolve_target`).

    Returns
    -------
    Dataset

    Raises
    ------
    ConfigError
        An unknown dataset or target.
    DatasetError
        The dataset's files are missing or unreadable (naming the file).
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}"
        ) from None
    target = resolve_target(name, target)
    if name in TARGETED:
        dataset = loader(Path(data_root), download, target)
    else:
        dataset = loader(Path(data_root), download)
    # Each loader checks its files' labels where it reads them; this holds for any loader.
    for split, labels in (("train", dataset.y_train), ("test", dataset.y_test)):
        _check_labels(name, labels.numpy(), split=split, dataset=name, count=dataset.num_classes)
    return dataset
