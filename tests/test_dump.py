from __future__ import annotations

import numpy as np
import pytest
import torch

from lib_dumpunet.capture import Key
from lib_dumpunet.dump import DumpWriter, read_dump
from lib_dumpunet.errors import DumpUnetError


def test_a_dump_folder_round_trips_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        Key(0, 0, 1, "IN04", "features"): torch.randn(8, 4, 6, generator=g),
        Key(0, 0, 1, "IN04.attn2", "qk"): torch.randn(2, 24, 77, generator=g),
        Key(1, 1, 12, "M00", "features", "uncond"): torch.randn(16, 2, 3, generator=g).half(),
        Key(1, 0, 3, "OUT11", "features", "cond", 2): torch.randn(8, 4, 6, generator=g),
    }
    with DumpWriter(tmp_path) as writer:
        for i, (key, tensor) in enumerate(tensors.items()):
            writer.write(key, tensor, seed=1000 + key.image, prompt=f"a cat, ünïcode {i}")
    dump = read_dump(writer.folder)
    assert len(dump) == len(tensors)
    by_key = {Key(e.image, e.pass_index, e.step, e.place, e.kind, e.branch, e.sub): e for e in dump}
    assert set(by_key) == set(tensors)
    for key, tensor in tensors.items():
        entry = by_key[key]
        array = dump.load(entry)
        assert array.dtype == tensor.numpy().dtype
        assert np.array_equal(array, tensor.numpy())
        assert entry.shape == tuple(tensor.shape)
        assert entry.seed == 1000 + key.image
        assert entry.prompt.startswith("a cat, ünïcode")


def test_each_job_gets_its_own_folder(tmp_path):
    with DumpWriter(tmp_path) as first:
        first.write(Key(0, 0, 1, "M00", "features"), torch.zeros(2, 2, 2))
    with DumpWriter(tmp_path) as second:
        second.write(Key(0, 0, 1, "M00", "features"), torch.ones(2, 2, 2))
    assert first.folder != second.folder
    assert read_dump(first.folder).load(read_dump(first.folder).entries[0]).sum() == 0
    assert read_dump(second.folder).load(read_dump(second.folder).entries[0]).sum() == 8


def test_bfloat16_is_written_as_float32(tmp_path):
    with DumpWriter(tmp_path) as writer:
        writer.write(Key(0, 0, 1, "M00", "features"), torch.full((1, 2, 2), 1.5, dtype=torch.bfloat16))
    dump = read_dump(writer.folder)
    assert dump.entries[0].dtype == "float32"
    assert dump.load(dump.entries[0]).tolist() == [[[1.5, 1.5], [1.5, 1.5]]]


def test_legacy_format_writes_one_raw_file_per_channel(tmp_path):
    tensor = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)
    with DumpWriter(tmp_path, "legacy") as writer:
        writer.write(Key(7, 0, 20, "IN00", "features"), tensor)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"007-IN00-020-{c:04d}-{writer.stamp}.bin" for c in range(3)]
    plane = np.fromfile(tmp_path / files[2], np.float32).reshape(2, 4)
    assert np.array_equal(plane, tensor[2].numpy())


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(DumpUnetError, match="not a folder"):
        DumpWriter(tmp_path / "taken")


def test_reading_a_folder_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DumpUnetError, match="manifest"):
        read_dump(tmp_path)
