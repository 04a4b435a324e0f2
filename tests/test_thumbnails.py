"""Gallery thumbnails: PNG encoding, and images only from a dataset whose hash and labels match."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from pie_audit.data._datasets import dataset_hash, load_dataset
from pie_audit.report._thumbnails import (
    HASH_MISMATCH,
    ID_OUT_OF_RANGE,
    LABEL_MISMATCH,
    NO_DATASET,
    NO_HASH,
    UNAVAILABLE,
    dataset_thumbnails,
    png_data_uri,
)


def decode(uri):
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :])))


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    labels = data.y_test.numpy()
    return data, {"name": "digits", "hash": dataset_hash(data.example_ids, labels, data.x_test)}, labels


def test_png_data_uri_scales_to_full_range_and_keeps_small_images():
    grey = decode(png_data_uri(np.linspace(-1, 3, 64).reshape(1, 8, 8)))
    assert grey.mode == "L" and grey.size == (8, 8)
    pixels = np.asarray(grey)
    assert pixels.min() == 0 and pixels.max() == 255
    rgb = decode(png_data_uri(np.random.default_rng(0).random((3, 200, 100))))
    assert rgb.mode == "RGB" and rgb.size == (32, 64)  # shrunk to fit 64 px, aspect kept
    assert np.asarray(decode(png_data_uri(np.full((4, 4), 7.0)))).max() == 0  # flat image: no NaN


def test_digits_images_when_hash_and_labels_match(digits):
    data, record, labels = digits
    ids = np.array([5, 0, 449])
    thumbs = dataset_thumbnails([None, {"dataset": record}], ids, labels[ids])
    assert thumbs.note is None
    assert sorted(thumbs.images) == [0, 5, 449]
    expected = png_data_uri(data.x_test[5].numpy())
    assert thumbs.images[5] == expected
    assert decode(expected).size == (8, 8)


@pytest.mark.parametrize(
    "runs,note",
    [
        ([None, {"seed": 0}], NO_DATASET),
        ([{"dataset": {"name": "digits"}}], NO_HASH.format(name="digits")),
        (
            [{"dataset": {"name": "digits", "hash": "sha256:0"}}],
            HASH_MISMATCH.format(name="digits", found="{found}", expected="sha256:0"),
        ),
    ],
)
def test_no_images_without_a_checked_dataset(digits, runs, note):
    _, record, labels = digits
    thumbs = dataset_thumbnails(runs, np.array([0]), labels[:1])
    assert not thumbs.images
    assert thumbs.note == note.format(found=record["hash"])


def test_no_images_when_the_dataset_is_missing(tmp_path):
    thumbs = dataset_thumbnails(
        [{"dataset": {"name": "cifar10", "hash": "sha256:0"}}], np.array([0]), np.array([3]), data_root=tmp_path
    )
    assert not thumbs.images
    assert thumbs.note.startswith(UNAVAILABLE.format(name="cifar10", reason="")[:40])


def test_no_images_when_labels_or_ids_disagree(digits):
    _, record, labels = digits
    wrong = (labels[:2] + 1) % 10
    thumbs = dataset_thumbnails([{"dataset": record}], np.array([0, 1]), wrong)
    assert not thumbs.images
    assert thumbs.note == LABEL_MISMATCH.format(name="digits", example_id=0, found=labels[0], expected=wrong[0])
    thumbs = dataset_thumbnails([{"dataset": record}], np.array([450]), np.array([0]))
    assert thumbs.note == ID_OUT_OF_RANGE.format(example_id=450, name="digits", n=450)


# --- images files ---------------------------------------------------------------------------------


def test_read_images_accepts_the_documented_layouts(tmp_path):
    from pie_audit.report._thumbnails import read_images

    ids = np.array([3, 1, 2])
    for shape, expected in (((3, 8, 8), (3, 8, 8)), ((3, 1, 8, 8), (3, 1, 8, 8)), ((3, 8, 8, 3), (3, 3, 8, 8))):
        np.savez(tmp_path / "i.npz", example_id=ids, images=np.zeros(shape, np.uint8))
        got_ids, images = read_images(tmp_path / "i.npz")
        assert got_ids.tolist() == [3, 1, 2] and images.shape == expected


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"images": np.zeros((2, 8, 8))}, "no array 'example_id'"),
        ({"example_id": np.array([1, 1]), "images": np.zeros((2, 8, 8))}, "repeated example_id"),
        ({"example_id": np.array([1, 2]), "images": np.zeros((3, 8, 8))}, "images of shape (3, 8, 8) for 2 ids"),
        ({"example_id": np.array([1.5, 2]), "images": np.zeros((2, 8, 8))}, "example_id has shape (2,) and type float64"),
    ],
)
def test_read_images_refuses_bad_files(tmp_path, arrays, reason):
    from pie_audit.errors import FormatError
    from pie_audit.report._thumbnails import read_images

    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(FormatError) as e:
        read_images(path)
    assert reason in str(e.value) and str(path) in str(e.value)


def test_read_images_never_unpickles(tmp_path):
    from pie_audit.errors import FormatError
    from pie_audit.report._thumbnails import read_images

    path = tmp_path / "pickled.npz"
    # numpy pickles object arrays into .npz files; loading one must not run the pickle.
    np.savez(path, example_id=np.array([1]), images=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(FormatError, match="Object arrays cannot be loaded when allow_pickle=False"):
        read_images(path)
