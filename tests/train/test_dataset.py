"""The streaming training dataset: sources, on-demand crops, determinism, shards, bad files."""

from __future__ import annotations

import pickle
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mordasr.train.dataset import (
    DegradeCollate,
    HRCropDataset,
    PairStream,
    StepSampler,
    TrainingBatches,
    find_training_images,
    preset_chunks,
    read_file_list,
    shard_indices,
)


def _photo(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    pixels = (255 * rng.random((size[1], size[0], 3))).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def photos(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    return [_photo(folder / f"{i:02d}.png", i) for i in range(10)]


def _batches(dataset: HRCropDataset, start: int, stop: int, workers: int) -> list[torch.Tensor]:
    return [b["hr"] for b in TrainingBatches(dataset, start, stop, num_workers=workers)]


def test_file_lists_name_files_relative_to_the_list_and_skip_comments(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text("# LSDIR subset\n\n../a.png\n/abs/b.jpg\n  c.png  \n")
    assert read_file_list(listing) == [
        (tmp_path / "lists" / "../a.png"),
        Path("/abs/b.jpg"),
        tmp_path / "lists" / "c.png",
    ]


def test_sources_mix_folders_and_file_lists(tmp_path: Path, photos: list[Path]) -> None:
    listing = tmp_path / "extra.txt"
    listing.write_text(f"{photos[0]}\n")
    (photos[0].parent / "notes.txt").write_text("not an image")
    assert find_training_images([photos[0].parent, listing]) == [*photos, photos[0]]


def test_a_missing_source_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a folder nor a file list"):
        find_training_images([tmp_path / "nowhere"])


def test_shards_are_disjoint_and_cover_the_order() -> None:
    order = list(range(11))
    shards = [shard_indices(order, p, 3) for p in range(3)]
    assert sorted(i for s in shards for i in s) == order


def test_the_dataset_keeps_no_decoded_image(photos: list[Path]) -> None:
    dataset = HRCropDataset(photos, 32, batch_size=2)
    for step in range(5):
        dataset[(step, 0)]
    assert len(pickle.dumps(dataset)) < 4096


def test_crops_are_uint8_patches_of_the_asked_size(photos: list[Path]) -> None:
    item = HRCropDataset(photos, 32, batch_size=2)[(0, 1)]
    assert item["hr"].shape == (3, 32, 32) and item["hr"].dtype == torch.uint8


def test_images_smaller_than_a_crop_are_padded(tmp_path: Path) -> None:
    small = _photo(tmp_path / "small.png", 0, size=(8, 6))
    assert HRCropDataset([small], 32, batch_size=1)[(0, 0)]["hr"].shape == (3, 32, 32)


def test_a_sample_depends_only_on_seed_step_slot_and_process(photos: list[Path]) -> None:
    first = HRCropDataset(photos, 16, batch_size=2, seed=7)
    again = HRCropDataset(photos, 16, batch_size=2, seed=7)
    assert torch.equal(first[(3, 1)]["hr"], again[(3, 1)]["hr"])
    assert not torch.equal(first[(3, 1)]["hr"], first[(4, 1)]["hr"])
    other_seed = HRCropDataset(photos, 16, batch_size=2, seed=8)
    assert not torch.equal(first[(3, 1)]["hr"], other_seed[(3, 1)]["hr"])


def test_each_process_reads_a_disjoint_share_of_every_epoch(photos: list[Path]) -> None:
    datasets = [HRCropDataset(photos, 16, 1, seed=1, process=p, num_processes=2) for p in (0, 1)]
    for epoch in (0, 1):
        shards = [set(d.shard(epoch)) for d in datasets]
        assert not shards[0] & shards[1]
        assert len(shards[0] | shards[1]) == len(photos)
    assert datasets[0].shard(0) != datasets[0].shard(1)


def test_one_epoch_of_a_process_reads_each_file_of_its_shard_once(photos: list[Path]) -> None:
    dataset = HRCropDataset(photos, 16, batch_size=1, augment=False, seed=2)
    crops = {dataset[(step, 0)]["hr"].numpy().tobytes() for step in range(dataset.epoch_length)}
    assert len(crops) == len(photos)


def test_resuming_with_workers_equals_an_uninterrupted_run(photos: list[Path]) -> None:
    dataset = HRCropDataset(photos, 16, batch_size=3, seed=5)
    uninterrupted = _batches(dataset, 0, 6, workers=0)
    resumed = _batches(dataset, 0, 2, workers=2) + _batches(dataset, 2, 6, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed, strict=True))


def test_corrupt_files_are_skipped_warned_once_and_counted(photos: list[Path]) -> None:
    photos[3].write_bytes(b"not a png")
    photos[4].write_bytes(b"")
    dataset = HRCropDataset(photos, 16, batch_size=2, seed=0)
    batches = TrainingBatches(dataset, 0, 3 * dataset.epoch_length, num_workers=1)
    with pytest.warns(UserWarning, match="skipped unreadable training file") as caught:
        shapes = [b["hr"].shape for b in batches]
    assert all(shape == (2, 3, 16, 16) for shape in shapes)
    assert set(batches.skipped_files) == {str(photos[3]), str(photos[4])}
    assert len([w for w in caught if "unreadable" in str(w.message)]) == 2


def test_a_shard_with_no_readable_file_is_an_error(photos: list[Path]) -> None:
    for path in photos:
        path.write_bytes(b"broken")
    with pytest.raises(RuntimeError, match="none of the 10 training files"):
        HRCropDataset(photos, 16, batch_size=1)[(0, 0)]


def test_more_processes_than_files_is_an_error(photos: list[Path]) -> None:
    with pytest.raises(ValueError, match="cannot feed 11 processes"):
        HRCropDataset(photos, 16, 1, process=0, num_processes=11)


def test_pairs_are_synthesised_in_the_workers_reproducibly(photos: list[Path]) -> None:
    dataset = HRCropDataset(photos, 32, batch_size=2, seed=3)
    collate = DegradeCollate(["mordasr-mild", "mordasr-severe"], scale=4, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        in_workers = list(TrainingBatches(dataset, 4, 6, num_workers=2, collate=collate))
    in_process = list(TrainingBatches(dataset, 4, 6, num_workers=0, collate=collate))
    assert in_workers[0]["lr"].shape == (2, 3, 8, 8)
    assert in_workers[0]["hr"].shape == (2, 3, 32, 32)
    for a, b in zip(in_workers, in_process, strict=True):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])


def _images_per_preset(batch_size: int, presets: int, batches: int) -> list[int]:
    counts = [0] * presets
    for index in range(batches):
        for preset, chunk in preset_chunks(torch.zeros(batch_size, 1), presets, index):
            counts[preset] += chunk.shape[0]
    return counts


@pytest.mark.parametrize(("batch_size", "presets"), [(4, 6), (4, 3), (5, 2), (1, 4)])
def test_every_preset_gets_an_equal_share_over_consecutive_batches(
    batch_size: int, presets: int
) -> None:
    batches = presets  # every preset is dealt batch_size images over as many batches
    assert _images_per_preset(batch_size, presets, batches) == [batch_size] * presets


def test_a_batch_the_presets_divide_is_split_in_preset_order() -> None:
    batch = torch.arange(4)
    for index in range(3):
        chunks = preset_chunks(batch, 2, index)
        assert [(p, c.tolist()) for p, c in chunks] == [(0, [0, 1]), (1, [2, 3])]


def test_the_last_of_more_presets_than_images_degrades_some_of_them() -> None:
    presets = ["bicubic"] * 5 + ["realesrgan"]  # only realesrgan sharpens its ground truth
    collate = DegradeCollate(presets, scale=4, seed=0)
    hr = torch.rand(4, 3, 32, 32)
    sharpened = [
        (step, i)
        for step in range(3)
        for i, gt in enumerate(collate.synthesise(hr, step)[1])
        if not torch.equal(gt, hr[i])
    ]
    assert sharpened == [(1, 1), (2, 3)]


def test_the_step_sampler_is_endless_unless_stopped() -> None:
    keys = list(islice(StepSampler(2, start=5), 3))
    assert keys == [[(5, 0), (5, 1)], [(6, 0), (6, 1)], [(7, 0), (7, 1)]]
    assert len(StepSampler(2, start=5, stop=9)) == 4


def _stream(photos: list[Path], **options: object) -> PairStream:
    dataset = HRCropDataset(photos, 32, batch_size=2, seed=3)
    synthesis = DegradeCollate(["mordasr-mild", "mordasr-severe"], scale=4, seed=3)
    return PairStream(dataset, synthesis, torch.device("cpu"), **options)


def test_a_stream_asked_for_another_batch_restarts_there(photos: list[Path]) -> None:
    in_order = _stream(photos)
    straight = [in_order.pair(index) for index in range(6)]
    jumping = _stream(photos, num_workers=1)
    for index in (0, 5, 2):
        lr, gt = jumping.pair(index)
        assert torch.equal(lr, straight[index][0]) and torch.equal(gt, straight[index][1])
    jumping.close()


def test_pairs_synthesised_after_the_loader_equal_those_from_the_workers(
    photos: list[Path],
) -> None:
    in_workers = _stream(photos, num_workers=2)
    after_loader = _stream(photos, num_workers=2, in_workers=False)
    for index in (0, 1, 4):
        (lr_a, gt_a), (lr_b, gt_b) = in_workers.pair(index), after_loader.pair(index)
        assert lr_a.shape == (2, 3, 8, 8)
        assert torch.equal(lr_a, lr_b) and torch.equal(gt_a, gt_b)
    in_workers.close()
    after_loader.close()
