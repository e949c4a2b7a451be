"""benchmarks/bench_train_memory.py: its runs are valid configs and its report is read right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from script_loader import loaded_script

from mordasr.train.cli import apply_overrides
from mordasr.train.config import TrainConfig


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with loaded_script("bench_train_memory") as module:
        yield module


@pytest.mark.parametrize(("streaming", "workers"), [(True, 2), (False, 0)])
def test_each_run_is_the_shipped_config_made_short(
    bench: ModuleType, tmp_path: Path, streaming: bool, workers: int
) -> None:
    settings = bench.overrides(tmp_path / "photos", tmp_path / "run", 50, workers, streaming, 2)
    config = apply_overrides(TrainConfig.from_yaml(bench.CONFIG), settings)
    assert config.data.streaming is streaming and config.data.num_workers == workers
    assert config.data.hr_dirs == [str(tmp_path / "photos")]
    assert (config.total_steps, config.data.pool_size, config.model.cache_trunk) == (50, 0, False)
    command = bench.train_command(bench.CONFIG, settings)
    assert command[:2] == ["/usr/bin/time", "-v"] and command.count("--set") == len(settings)


def test_the_peak_is_read_from_the_time_report(bench: ModuleType) -> None:
    report = "\tExit status: 0\n\tMaximum resident set size (kbytes): 744376\n"
    assert bench.max_rss_kib(report) == 744376
    with pytest.raises(ValueError, match="Maximum resident set size"):
        bench.max_rss_kib("Command terminated by signal 9")
