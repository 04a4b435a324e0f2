"""Datasets, loaded whole into tensors.

pie-audit trains many small models on the same data, so every dataset is held in memory as
normalised ``float32`` tensors of shape ``(N, C, H, W)`` that a trainer can move to its device
once. Example ids are indices into the test split, stable across runs and models.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
from collections.abc import Callable
from functools import cached_property
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DatasetError

__all__ = [
    "Dataset",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "DIGITS_TEST_FRACTION",
    "DIGITS_SPLIT_SEED",
    "load_dataset",
    "dataset_hash",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: The digits split: 25% of each class held out for test, with this seed (documented, fixed).
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

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
    """

    name: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    split: str
    augment: bool = False

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

    try:
        if path.suffix == ".gz":
            import tempfile

            with gzip.open(path, "rb") as fh, tempfile.NamedTemporaryFile() as tmp:
                tmp.write(fh.read())
                tmp.flush()
                return read_sn3_pascalvincent_tensor(tmp.name, strict=False).numpy()
        return read_sn3_pascalvincent_tensor(str(path), strict=False).numpy()
    except (OSError, EOFError, ValueError, AssertionError, KeyError) as e:
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
    arrays = {k: _read_idx(_find_idx(directory, v)) for k, v in _FMNIST_FILES.items()}  # type: ignore[arg-type]
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DatasetError(f"{directory}: {part} split has {n_img} images but {n_lab} labels")
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
    try:
        with open(path, "rb") as fh:
            return _CifarUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"{path}: not a CIFAR-10 batch file ({e})") from e


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

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            batch = _read_cifar_batch(base / n)
            try:
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch["labels"], dtype=np.int64))
            except (KeyError, ValueError) as e:
                raise DatasetError(f"{base / n}: not a CIFAR-10 batch ({e})") from e
        return np.concatenate(xs), np.concatenate(ys)

    x_tr, y_tr = read([f"data_batch_{i}" for i in range(1, 6)])
    x_te, y_te = read(["test_batch"])
    classes = CIFAR10_CLASSES
    meta = base / "batches.meta"
    if meta.is_file():
        names = _read_cifar_batch(meta).get("label_names")
        if names:
            classes = tuple(str(n) for n in names)
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


DATASETS: dict[str, Callable[[Path, bool], Dataset]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
}


def load_dataset(name: str, *, data_root: str | Path = "data", download: bool = False) -> Dataset:
    """Load a dataset by registry name.

    Parameters
    ----------
    name : {"digits", "fashion-mnist", "cifar10"}
        Dataset name.
    data_root : path, default "data"
        Where to look for (and, with ``download``, put) dataset files.
    download : bool, default False
        Allow downloading through torchvision when the files are not found locally.

    Returns
    -------
    Dataset
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}"
        ) from None
    return loader(Path(data_root), download)
