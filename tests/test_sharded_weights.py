"""Reading weights by slices: a rank's flat ZeRO-3 segment of a tensor, from a safetensors file
or from a sharded checkpoint written at another shard count, equals the segment cut from the whole
tensor; filling a declared net gives sharded parameters only their segments."""
import numpy as np
import pytest
from safetensors.numpy import save_file

from vgen.models.layers.init import declare_only, init_value, named_params
from vgen.models.weights import SafetensorsWeights, fill_parameters, flat_segment
from vgen.parallel.zero import local_segment

SHAPES = {"w": (7, 5), "v": (13,), "s": (), "t": (3, 1, 4), "one": (1, 9)}


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in SHAPES.items()}


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 8])
def test_segments_of_a_safetensors_file(arrays, tmp_path, shards):
    path = tmp_path / "w.safetensors"
    save_file(arrays, str(path))
    src = SafetensorsWeights(path)
    for name, whole in arrays.items():
        for rank in range(shards):
            np.testing.assert_array_equal(src.segment(name, shards, rank), local_segment(whole, shards, rank),
                                          err_msg=f"{name} {rank}/{shards}")
        np.testing.assert_array_equal(src.whole(name), whole)


def test_flat_segment_reads_only_the_rows_it_needs():
    whole = np.arange(60, dtype=np.float32).reshape(12, 5)
    asked = []

    def rows(a, b):
        asked.append((a, b))
        return whole[a:b]

    np.testing.assert_array_equal(flat_segment(rows, whole.shape, 4, 1), local_segment(whole, 4, 1))
    assert asked == [(3, 6)]  # elements 15..29: rows 3..5, not the whole tensor


def write_sharded(root, arrays, shards):
    """A checkpoint in the trainer's sharded format, as `shards` ranks write it (plus a buffer)."""
    from vgen.train.checkpoint import INDEX_FILE, CheckpointWriter, shard_file

    w = CheckpointWriter(root, 5).begin()
    params = {n: {"shape": list(a.shape), "numel": int(a.size), "shard": -(-int(a.size) // shards)}
              for n, a in arrays.items()}
    w.write_json(INDEX_FILE, {"format": "vgen-sharded-1", "shards": shards, "kinds": ["model"], "params": params})
    w.write("buffers.safetensors", {"buf": np.ones(3, np.float32)})
    for r in range(shards):
        w.write(shard_file(r, shards), {f"model/{n}": local_segment(a, shards, r) for n, a in arrays.items()})
    return w.commit({"step": 5}, keep_last=3)


def test_sharded_checkpoint_read_at_other_shard_counts(arrays, tmp_path):
    """A checkpoint written by 4 ranks (the trainer's sharded format) read back by 2 and 3 ranks."""
    from vgen.train.checkpoint import CheckpointReader

    src = CheckpointReader(write_sharded(tmp_path, arrays, 4)).weights("model")
    for shards in (1, 2, 3):
        for name, whole in arrays.items():
            for rank in range(shards):
                np.testing.assert_array_equal(src.segment(name, shards, rank), local_segment(whole, shards, rank))
    for name, whole in arrays.items():
        np.testing.assert_array_equal(src.whole(name), whole)
    assert src.has("buf") and np.array_equal(src.whole("buf"), np.ones(3, np.float32))


def test_fill_gives_sharded_parameters_their_segments_only(tmp_path):
    from vgen.models.stepvideo.dit import StepVideoDiT

    small = dict(in_channels=8, num_heads=4, head_dim=16, depth=1, caption_channels=32, clip_channels=16,
                 rope_split=(8, 4, 4))
    with declare_only():
        net = StepVideoDiT(**small)
    params = dict(named_params(net))
    file_part = {n: np.full(tuple(p.shape), 0.5, np.float32) for n, p in params.items() if "attn1" in n}
    save_file(file_part, str(tmp_path / "part.safetensors"))
    sharded = {"transformer_blocks.0.attn1.wqkv.weight", "proj_out.weight"}  # one from the file, one from init
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    fill_parameters(net, 3, [SafetensorsWeights(tmp_path / "part.safetensors")], sharded, shards=3, rank=2)
    got = {n: p.asnumpy() for n, p in named_params(net)}
    qkv = "transformer_blocks.0.attn1.wqkv.weight"
    np.testing.assert_array_equal(got[qkv], local_segment(file_part[qkv], 3, 2))
    with declare_only():
        fresh = StepVideoDiT(**small)
    p_out = dict(named_params(fresh))["proj_out.weight"]
    np.testing.assert_array_equal(got["proj_out.weight"], local_segment(init_value(p_out, "proj_out.weight", 3), 3, 2))
    assert got["proj_out.weight"].shape == (-(-int(np.prod(shapes["proj_out.weight"])) // 3),)
    np.testing.assert_array_equal(got["transformer_blocks.0.attn1.wo.weight"], 0.5)  # whole, from the file


def test_sharded_checkpoint_lists_its_shapes(arrays, tmp_path):
    from vgen.train.checkpoint import CheckpointReader

    src = CheckpointReader(write_sharded(tmp_path, arrays, 2)).weights("model")
    assert src.shapes == {**{n: a.shape for n, a in arrays.items()}, "buf": (3,)}


def test_a_sharded_safetensors_checkpoint_reads_as_one(arrays, tmp_path, cw):
    """Official checkpoints ship as several files + an index.json: the trainer's source and the
    converter read them as one (by a directory or by the index)."""
    import json

    from vgen.models.weights import WeightsError

    names = sorted(arrays)
    parts = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    folder = tmp_path / "sharded"
    folder.mkdir()
    for file, part in parts.items():
        save_file({n: arrays[n] for n in part}, str(folder / file))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {n: f for f, part in parts.items() for n in part}}))
    for where in (folder, index):
        src = SafetensorsWeights(where)
        assert set(src.shapes) == set(arrays)
        for name, whole in arrays.items():
            np.testing.assert_array_equal(src.whole(name), whole)
            np.testing.assert_array_equal(src.segment(name, 3, 1), local_segment(whole, 3, 1))
        source = cw.open_source(where, allow_pickle=False)
        assert sorted(source.keys()) == names and np.array_equal(source.read(names[0]), arrays[names[0]])
        source.close()
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing file"):
        SafetensorsWeights(index)
