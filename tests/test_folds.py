"""Stratified folds: made once per dataset, stored with it, reused, refused
when the dataset changed."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liposome_bench.dataset import LAMELLARITY, Dataset, Particle, custom_problem, load_dataset
from liposome_bench.errors import FoldError
from liposome_bench.folds import folds_path, load_or_make_folds, make_folds

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def in_memory_dataset(counts, problem=None):
    problem = problem or custom_problem(list(counts))
    rng = np.random.default_rng(0)
    particles = []
    for label, n in counts.items():
        for _ in range(n):
            image = rng.integers(0, 255, (8, 8), dtype=np.uint8)
            particles.append(Particle(str(len(particles)), label, image, image > 128))
    return Dataset(problem, particles)


@pytest.fixture
def export_copy(tmp_path):
    return shutil.copytree(FIXTURES / "export", tmp_path / "export")


def test_folds_are_stratified_and_cover_every_particle_once():
    y = np.repeat([0, 1, 2], [20, 10, 5])
    fold_of = make_folds(y, ["a", "b", "c"], k=5, seed=0)
    assert sorted(set(fold_of)) == [0, 1, 2, 3, 4]
    for fold in range(5):
        assert np.bincount(y[fold_of == fold], minlength=3).tolist() == [4, 2, 1]


def test_folds_depend_on_the_seed_only():
    y = np.repeat([0, 1], [30, 15])
    a = make_folds(y, ["a", "b"], k=3, seed=4)
    np.testing.assert_array_equal(a, make_folds(y, ["a", "b"], k=3, seed=4))
    assert not np.array_equal(a, make_folds(y, ["a", "b"], k=3, seed=5))


def test_train_and_test_indices_partition_the_dataset():
    folds = load_or_make_folds(in_memory_dataset({"a": 12, "b": 6}), k=3)
    for fold in range(3):
        test, train = folds.test_indices(fold), folds.train_indices(fold)
        assert sorted(np.concatenate([test, train]).tolist()) == list(range(18))
        assert not set(test) & set(train)


@pytest.mark.parametrize(
    "counts, k, message",
    [
        (
            {"a": 10, "b": 3},
            5,
            "5 folds need at least 5 particles per class; 'b' has 3. Use --folds 3.",
        ),
        (
            {"a": 10, "rare": 1},
            3,
            "3 folds need at least 3 particles per class; 'rare' has 1. Add particles of that "
            "class or remove it.",
        ),
        ({"a": 10, "b": 10}, 1, "--folds must be at least 2; got 1."),
    ],
)
def test_too_few_particles_name_the_class_and_count(counts, k, message):
    with pytest.raises(FoldError) as exc:
        load_or_make_folds(in_memory_dataset(counts), k=k)
    assert str(exc.value) == message


def test_an_empty_class_of_a_preset_does_not_stop_folds():
    dataset = in_memory_dataset({"unilamellar": 6, "multilamellar": 3}, LAMELLARITY)
    folds = load_or_make_folds(dataset, k=3)
    assert folds.path is None  # in memory: nothing stored
    assert len(folds.fold_of) == 9


def test_folds_are_stored_and_reused(export_copy):
    dataset = load_dataset(export_copy)
    folds = load_or_make_folds(dataset, k=5, seed=0)
    path = folds_path(export_copy, 5, 0)
    assert folds.path == path and path.is_file()
    stored = path.read_bytes()
    again = load_or_make_folds(load_dataset(export_copy), k=5, seed=0)
    np.testing.assert_array_equal(again.fold_of, folds.fold_of)
    assert path.read_bytes() == stored
    # another seed is another file, not a change of the first one
    other = load_or_make_folds(dataset, k=5, seed=1)
    assert other.path == folds_path(export_copy, 5, 1)
    assert path.read_bytes() == stored


def test_stored_folds_follow_particles_not_order(export_copy):
    """Reading the same particles gives the same fold per id."""
    dataset = load_dataset(export_copy)
    folds = load_or_make_folds(dataset, k=3)
    by_id = dict(zip(dataset.ids, folds.fold_of))
    again = load_or_make_folds(load_dataset(export_copy), k=3)
    assert dict(zip(dataset.ids, again.fold_of)) == by_id


def test_changed_dataset_is_refused_with_the_exact_message(export_copy):
    dataset = load_dataset(export_copy)
    load_or_make_folds(dataset, k=5)
    old = dataset.fingerprint()
    image_path = export_copy / "images" / f"{dataset.ids[0]}.png"
    pixels = np.array(Image.open(image_path))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image_path)
    changed = load_dataset(export_copy)
    with pytest.raises(FoldError) as exc:
        load_or_make_folds(changed, k=5)
    assert str(exc.value) == (
        f"{folds_path(export_copy, 5, 0)} was made for another dataset (fingerprint "
        f"{old}, this dataset {changed.fingerprint()}). Delete it to make new folds "
        "for this dataset."
    )


def test_unreadable_folds_file_is_refused(export_copy):
    path = folds_path(export_copy, 5, 0)
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(
        FoldError, match=r"is not a folds file \(.*\)\. Delete it to make new folds\.$"
    ):
        load_or_make_folds(load_dataset(export_copy), k=5)


def test_folds_file_for_other_k_or_out_of_range_is_refused(export_copy):
    import json

    dataset = load_dataset(export_copy)
    load_or_make_folds(dataset, k=3)
    path = folds_path(export_copy, 3, 0)
    stored = json.loads(path.read_text())
    stored["folds"][dataset.ids[0]] = 7
    path.write_text(json.dumps(stored))
    with pytest.raises(FoldError) as exc:
        load_or_make_folds(dataset, k=3)
    assert str(exc.value) == (
        f"{path} is not a folds file for k=3, seed 0 (it holds k=3, seed 0, folds 0-7). "
        "Delete it to make new folds."
    )
