"""Dataset loaders: the digits split, Fashion-MNIST on the real IDX files, CIFAR-10's format."""

import doctest
import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pie_audit.data import _datasets as data_module
from pie_audit.data._datasets import dataset_hash, load_dataset
from pie_audit.errors import ConfigError, DatasetError


def test_digits_split_is_fixed_and_stratified():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    counts = np.bincount(ds.y_test.numpy(), minlength=10)
    full = np.bincount(np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()]))
    np.testing.assert_allclose(counts, 0.25 * full, atol=1)  # 25% of each class
    again = load_dataset("digits")
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_test, again.y_test)
    # Standardised with training statistics.
    assert abs(float(ds.x_train.mean())) < 1e-5 and float(ds.x_train.std()) == pytest.approx(1, abs=1e-3)
    assert ds.classes == tuple("0123456789")
    np.testing.assert_array_equal(ds.example_ids, np.arange(450))


def test_dataset_hash_depends_on_ids_labels_and_images():
    rng = np.random.default_rng(0)
    ids, labels = np.arange(5), np.array([0, 1, 2, 1, 0])
    images = rng.standard_normal((5, 1, 2, 2)).astype(np.float32)
    h = dataset_hash(ids, labels, images)
    assert h.startswith("sha256:") and len(h) == len("sha256:") + 64
    assert h == dataset_hash(ids.copy(), labels.copy(), torch.from_numpy(images.copy()))
    assert h != dataset_hash(ids, labels + 1, images) and h != dataset_hash(ids + 1, labels, images)
    changed = images.copy()
    changed[3, 0, 1, 1] = np.nextafter(changed[3, 0, 1, 1], np.float32(np.inf))  # one ulp
    assert h != dataset_hash(ids, labels, changed)
    assert h != dataset_hash(ids, labels, images.reshape(5, 1, 1, 4))  # same bytes, other shape
    assert h != dataset_hash(ids, labels)


def test_dataset_hash_without_images_is_the_one_older_records_hold():
    ids, labels = np.arange(3), np.array([2, 0, 1])
    old = hashlib.sha256(ids.astype("<i8").tobytes() + labels.astype("<i8").tobytes()).hexdigest()
    assert dataset_hash(ids, labels) == "sha256:" + old


def test_preprocessing_is_exact_whatever_the_order_of_the_training_split():
    """A float reduction's result depends on its order (and on the number of threads); the
    statistics here come from integer sums, so the stored images, and their hash, do not."""
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (500, 3, 4, 4), dtype=np.uint8)
    test = rng.integers(0, 256, (7, 3, 4, 4), dtype=np.uint8)
    x_train, x_test = data_module._standardise(train, test)
    shuffled_train, shuffled_test = data_module._standardise(train[rng.permutation(500)], test)
    assert torch.equal(x_test, shuffled_test)
    assert x_train.dtype == torch.float32 and x_test.shape == (7, 3, 4, 4)
    values = train[:, 1].astype(np.float64)
    expected = (test[:, 1].astype(np.float64) - values.mean()) / values.std(ddof=1)
    np.testing.assert_allclose(x_test[:, 1].numpy(), expected, rtol=1e-6)
    # A constant channel is centred, not divided by zero.
    flat = np.full((4, 1, 2, 2), 9, dtype=np.uint8)
    assert torch.equal(data_module._standardise(flat, flat)[1], torch.zeros(4, 1, 2, 2))


def test_doctests():
    assert doctest.testmod(data_module).failed == 0


def test_digits_hash_is_stable_across_loads():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert dataset_hash(a.example_ids, a.y_test.numpy(), a.x_test) == dataset_hash(
        b.example_ids, b.y_test.numpy(), b.x_test
    )


def test_split_hashes_are_the_datasets_own_computed_once():
    digits = load_dataset("digits")
    ids, labels = digits.example_ids, digits.y_test.numpy()
    assert digits.test_hash == dataset_hash(ids, labels, digits.x_test)
    assert digits.test_label_hash == dataset_hash(ids, labels)
    train_ids = np.arange(len(digits.y_train), dtype=np.int64)
    assert digits.train_hash == dataset_hash(train_ids, digits.y_train.numpy(), digits.x_train)
    # What run.json files already on disk record for digits: a changed hash would refuse them.
    assert digits.test_hash == "sha256:4cff04c01c0394653f4f748a6f7009ed734567ac20258082f01ec9fc7939dddb"
    assert digits.test_label_hash == "sha256:086eab96b878f31cbccfcd6b8d2aa7ccce79bc0b320bb7e4f9849412950a7c41"
    assert {"test_hash", "test_label_hash", "train_hash"} <= set(vars(digits))  # cached on the instance


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


_REAL_FMNIST = data_module.DEBIAN_FASHION_MNIST


@pytest.mark.skipif(
    not _REAL_FMNIST.is_dir() and not os.environ.get("CI"),
    reason="Debian package dataset-fashion-mnist not installed (CI installs it)",
)
def test_fashion_mnist_real_files(tmp_path):
    ds = load_dataset("fashion-mnist", data_root=tmp_path)  # empty root: falls back to Debian's copy
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_test.numpy()).tolist() == [1000] * 10
    assert np.bincount(ds.y_train.numpy()).tolist() == [6000] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert str(_REAL_FMNIST) in ds.split


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    # IDX: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, raw bytes.
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_from_data_root(tmp_path, compress):
    rng = np.random.default_rng(0)
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)), compress)
    _write_idx(root / "train-labels-idx1-ubyte", rng.integers(0, 10, 20), compress)
    test_labels = rng.integers(0, 10, 7)
    _write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (7, 28, 28)), compress)
    _write_idx(root / "t10k-labels-idx1-ubyte", test_labels, compress)
    ds = load_dataset("fashion-mnist", data_root=tmp_path)
    assert ds.x_test.shape == (7, 1, 28, 28)
    np.testing.assert_array_equal(ds.y_test.numpy(), test_labels)


def test_fashion_mnist_missing_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="IDX files not found.*--download"):
        load_dataset("fashion-mnist", data_root=tmp_path)


def _write_cifar(root: Path, n_train_per_batch=4, n_test=6, seed=0) -> np.ndarray:
    """Write CIFAR-10 in torchvision's python format (pickled dicts of uint8 rows)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", n_train_per_batch) for i in range(1, 6)] + [
        ("test_batch", n_test)
    ]:
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img{i}.png" for i in range(n)],
        }
        with open(base / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class-{i}" for i in range(10)]}, fh)
    with open(base / "test_batch", "rb") as fh:
        return np.asarray(pickle.load(fh)["labels"])


def test_cifar10_in_torchvision_format(tmp_path):
    test_labels = _write_cifar(tmp_path)
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_test.numpy(), test_labels)
    assert ds.classes[3] == "class-3" and ds.augment


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Evil()}, fh)
    with pytest.raises(DatasetError, match="forbidden global"):
        load_dataset("cifar10", data_root=tmp_path)


def test_cifar10_missing_without_download(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py not found; pass --download"):
        load_dataset("cifar10", data_root=tmp_path)
