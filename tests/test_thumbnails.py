"""Gallery thumbnails: PNG encoding, and images only from a dataset whose hash and labels match."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from pie_audit.data import dataset_hash, load_dataset
from pie_audit.thumbnails import (
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
    return data, {"name": "digits", "hash": dataset_hash(data.example_ids, labels)}, labels


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
