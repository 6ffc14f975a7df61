"""LoRA on the tiny HunyuanDiT (names, freezing, outputs against merged-weight references, merge,
state round trip, ms.jit, a gradient step) and tools/convert_weights.py (official containers,
dtypes, strict reload, refusal of pickles, named layout errors, the full-size expected-key table
against the official layout files)."""
import importlib.util
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops
from mindspore.common.np_dtype import bfloat16
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import REPO, layout_lines
from vgen.models.hunyuan.dit import build_hunyuan_dit
from vgen.models.layers.init import count_params, materialize, named_params
from vgen.models.layers.linear import Linear
from vgen.models.hunyuan.spec import LORA_TARGETS as HUNYUAN_BLOCK_TARGETS
from vgen.models.lora import (LoRALinear, adapter_names, apply_lora, load_lora, lora_layers,
                              lora_state, merge_lora)
from vgen.models.weights import WeightsError, load_arrays, load_safetensors, net_arrays

# the tiny preset cut to one block of each kind: every code path, a fraction of the ops
SMALL = dict(depth_double=1, depth_single=1, refiner_depth=1)
RANK, ALPHA = 4, 8.0
TARGETS = ["double_blocks.*.img_attn_qkv", "double_blocks.*.txt_mlp.fc2", "*.linear1", "*.linear2",
           "final_layer.adaLN_modulation.1"]


def tiny(lora=False, **lora_kw):
    net = build_hunyuan_dit("tiny", **SMALL)
    if lora:
        apply_lora(net, lora_kw.pop("rank", RANK), lora_kw.pop("alpha", ALPHA), lora_kw.pop("targets", TARGETS),
                   **lora_kw)
    return materialize(net, seed=0)


def layout_of(net):
    return [(n, tuple(p.shape)) for n, p in named_params(net)]


def set_values(net, arrays):
    """In place (ops.assign): a graph compiled by ms.jit keeps reading the parameter's own tensor;
    set_data would swap it for a new one the graph does not see."""
    for n, p in named_params(net):
        if n in arrays:
            ops.assign(p, Tensor(np.asarray(arrays[n], np.float32)))


@pytest.fixture(scope="module")
def base_arrays():
    """Random base weights (the zero-initialised gates and output layer would hide most of the net)."""
    rng = np.random.default_rng(1)
    out = {}
    for name, shape in layout_of(build_hunyuan_dit("tiny", **SMALL)):
        value = 0.1 * rng.standard_normal(shape)
        if "norm" in name and name.endswith("weight"):
            value += 1.0
        out[name] = value.astype(np.float32)
    return out


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 1, 4, 6)).astype(np.float32)
    t = np.array([500.0, 30.0], np.float32)
    text = rng.standard_normal((2, 4, 32)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    clip = rng.standard_normal((2, 16)).astype(np.float32)
    guidance = np.array([6.0, 3.5], np.float32)
    return [Tensor(a) for a in (x, t, text, mask, clip, guidance)]


@pytest.fixture(scope="module")
def plain(base_arrays):
    """The base model without LoRA, run in PyNative: the reference."""
    net = tiny()
    load_arrays(net, base_arrays, "base")
    return net


@pytest.fixture(scope="module")
def lora(base_arrays):
    """(LoRA net, its forward compiled once with ms.jit). Parameters are graph inputs, so tests that
    set new values reuse the compiled graph."""
    net = tiny(lora=True)
    set_values(net, base_arrays)

    @ms.jit
    def forward(*args):
        return net(*args)

    return net, forward


def random_adapters(net, seed=2):
    rng = np.random.default_rng(seed)
    arrays = {n: (0.2 * rng.standard_normal(p.shape)).astype(np.float32) for n, p in zip(
        adapter_names(net), [p for n, p in named_params(net) if ".lora_" in n])}
    load_lora(net, arrays)
    return arrays


def merged_reference(base_arrays, adapters):
    """W + (alpha/rank) B A in float64 numpy, for every adapted layer."""
    out = dict(base_arrays)
    for name in adapters:
        if name.endswith(".lora_down.weight"):
            path = name[: -len(".lora_down.weight")]
            a = adapters[name].astype(np.float64)
            b = adapters[f"{path}.lora_up.weight"].astype(np.float64)
            out[f"{path}.weight"] = (base_arrays[f"{path}.weight"] + ALPHA / RANK * (b @ a)).astype(np.float32)
    return out


def run(net, inputs):
    return net(*inputs).asnumpy()


# ---- (a) LoRA ------------------------------------------------------------------------------------

def test_base_names_unchanged_adapters_counted_and_only_adapters_train():
    base = tiny()
    net = tiny(lora=True)
    layout = layout_of(net)
    assert [x for x in layout if ".lora_" not in x[0]] == layout_of(base)  # names, shapes and order
    assert all(n == p.name for n, p in named_params(net))  # graph names are the full paths too

    # an independent list of the selected layers: the 2-D `weight` entries of the official layout
    linear_paths = [n[: -len(".weight")] for n, s in layout_of(base) if n.endswith(".weight") and len(s) == 2]
    expected = [p for p in linear_paths
                if p.endswith((".img_attn_qkv", ".txt_mlp.fc2", ".linear1", ".linear2"))
                or p == "final_layer.adaLN_modulation.1"]
    assert [p for p, _ in lora_layers(net)] == expected and len(expected) == 5
    shapes = dict(layout_of(base))
    want = []
    for p in expected:
        out_dim, in_dim = shapes[p + ".weight"]
        want += [(f"{p}.lora_down.weight", (RANK, in_dim)), (f"{p}.lora_up.weight", (out_dim, RANK))]
    assert [x for x in layout if ".lora_" in x[0]] == want
    assert count_params(net)[0] - count_params(base)[0] == sum(int(np.prod(s)) for _, s in want)

    trainable = {n for n, p in named_params(net) if p.requires_grad}
    assert trainable == {n for n, _ in want}
    assert {id(p) for p in net.trainable_params()} == {id(p) for n, p in named_params(net) if n in trainable}


def test_adapter_init_peft_style_and_same_declared_or_materialized():
    declared_then_materialized = tiny(lora=True)
    materialized_then_adapted = tiny()
    apply_lora(materialized_then_adapted, RANK, ALPHA, TARGETS, seed=0)
    a, b = lora_state(declared_then_materialized), lora_state(materialized_then_adapted)
    assert list(a) == list(b) == adapter_names(declared_then_materialized)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        if name.endswith("lora_up.weight"):
            assert not a[name].any()  # B = 0: the adapted net starts as the base net
        else:
            bound = 1.0 / np.sqrt(a[name].shape[1])  # kaiming_uniform(a=sqrt(5)) on [rank, in]
            assert np.abs(a[name]).max() <= bound and np.abs(a[name]).max() > 0.5 * bound


def test_target_patterns_are_checked():
    net = build_hunyuan_dit("tiny", **SMALL)
    with pytest.raises(ValueError, match="no_such_layer"):
        apply_lora(net, RANK, ALPHA, ["*.no_such_layer"])
    with pytest.raises(ValueError, match="match no Linear"):
        apply_lora(net, RANK, ALPHA, ["double_blocks.*.img_attn_q_norm"])  # an RMSNorm, not a Linear
    paths = apply_lora(net, RANK, ALPHA, "double_blocks.*")
    # every Linear of the block (modulation, qkv, proj, MLP of both streams), no adapter of an adapter
    assert len(paths) == 10 and all(p.startswith("double_blocks.0.") for p in paths)
    with pytest.raises(ValueError, match="already adapted"):
        apply_lora(net, RANK, ALPHA, ["double_blocks.*.img_attn_qkv"])
    with pytest.raises(ValueError, match="rank"):
        apply_lora(build_hunyuan_dit("tiny", **SMALL), 0, ALPHA, TARGETS)


def test_outputs_under_jit_equal_the_merged_weight_reference_and_merge(lora, plain, base_arrays, inputs):
    net, forward = lora
    set_values(net, base_arrays)
    load_lora(net, {n: np.zeros(a.shape, np.float32) if "lora_up" in n else a for n, a in lora_state(net).items()})
    base_out = run(plain, inputs)
    # B = 0: the base model (compiled vs PyNative kernels round differently, at ~1e-6)
    np.testing.assert_allclose(forward(*inputs).asnumpy(), base_out, rtol=1e-5, atol=1e-5)

    adapters = random_adapters(net)
    reference = merged_reference(base_arrays, adapters)
    set_values(plain, reference)
    try:
        expected = run(plain, inputs)
    finally:
        set_values(plain, base_arrays)
    assert np.abs(expected - base_out).max() > 1e-2  # the adapters matter
    lora_out = forward(*inputs).asnumpy()
    np.testing.assert_allclose(lora_out, expected, rtol=1e-4, atol=1e-5)

    assert merge_lora(net) == 5
    state = lora_state(net)
    assert all(not a.any() for n, a in state.items() if "lora_up" in n)  # the adapters no longer act
    merged = net_arrays(net)
    for name in reference:
        np.testing.assert_allclose(merged[name], reference[name], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(forward(*inputs).asnumpy(), lora_out, rtol=1e-5, atol=1e-6)


def test_merge_and_unload_gives_the_official_layout(lora, base_arrays, inputs):
    net = tiny(lora=True)
    set_values(net, base_arrays)
    adapters = random_adapters(net, seed=3)
    compiled_net, forward = lora  # the same weights in the compiled LoRA net give the expected output
    set_values(compiled_net, base_arrays)
    load_lora(compiled_net, adapters)
    expected = forward(*inputs).asnumpy()

    merge_lora(net, unload=True)
    assert layout_of(net) == layout_of(tiny()) and not lora_layers(net)
    assert all(n == p.name for n, p in named_params(net))
    assert type(net.single_blocks[0].linear1) is Linear
    np.testing.assert_allclose(run(net, inputs), expected, rtol=1e-4, atol=1e-5)


def test_lora_state_round_trip_and_strict_loading():
    src = tiny(lora=True)
    arrays = random_adapters(src, seed=4)
    state = lora_state(src)
    assert list(state) == adapter_names(src) and set(state) == set(arrays)
    for name in state:
        np.testing.assert_array_equal(state[name], arrays[name])
    assert not any(".lora_" not in n for n in state)  # adapters only

    dst = tiny(lora=True)
    load_lora(dst, state)
    for name, value in lora_state(dst).items():
        np.testing.assert_array_equal(value, state[name])

    missing = dict(state)
    del missing["single_blocks.0.linear2.lora_up.weight"]
    with pytest.raises(WeightsError, match="single_blocks.0.linear2.lora_up.weight"):
        load_lora(dst, missing)
    load_lora(dst, missing, strict=False)  # non-strict: loads the rest
    with pytest.raises(WeightsError, match="unexpected.*foo.lora_up.weight"):
        load_lora(dst, {**state, "foo.lora_up.weight": np.zeros((1, 1), np.float32)})
    bad = {**state, "single_blocks.0.linear1.lora_down.weight": np.zeros((RANK + 1, 64), np.float32)}
    with pytest.raises(WeightsError, match="single_blocks.0.linear1.lora_down.weight"):
        load_lora(dst, bad, strict=False)  # a shape mismatch always fails


def test_gradient_step_changes_only_the_adapters(lora, base_arrays, inputs):
    net, _ = lora
    set_values(net, base_arrays)
    init = {n: (np.zeros(a.shape, np.float32) if "lora_up" in n else a) for n, a in lora_state(tiny(lora=True)).items()}
    load_lora(net, init)
    before = net_arrays(net)
    target = Tensor(np.random.default_rng(5).standard_normal(inputs[0].shape).astype(np.float32))

    def loss_fn(*args):
        return ((net(*args) - target) ** 2).mean()

    weights = net.trainable_params()
    assert {p.name for p in weights} == set(adapter_names(net))
    loss, grads = ms.value_and_grad(loss_fn, None, weights)(*inputs)
    grads = {p.name: g.asnumpy() for p, g in zip(weights, grads)}
    # at B = 0 the gradient reaches B only (dL/dA = scale * B^T dL/dy x = 0), as in every LoRA
    assert all(np.abs(g).max() > 0 for n, g in grads.items() if "lora_up" in n)
    assert all(not g.any() for n, g in grads.items() if "lora_down" in n)
    for p in weights:
        ops.assign(p, p - 0.05 * Tensor(grads[p.name]))
    after = net_arrays(net)
    changed = {n for n in before if not np.array_equal(before[n], after[n])}
    assert changed == {n for n in grads if "lora_up" in n}
    assert float(loss_fn(*inputs).asnumpy()) < float(loss.asnumpy())


def test_dropout_only_in_training():
    class Holder(ms.nn.Cell):
        def __init__(self):
            super().__init__()
            self.proj = Linear(6, 5)

    net = materialize(Holder(), seed=0)
    with pytest.raises(ValueError, match="dropout"):
        apply_lora(net, 2, 4.0, ["proj"], dropout=1.0)
    apply_lora(net, 2, 4.0, ["proj"], dropout=0.5)
    assert isinstance(net.proj, LoRALinear)
    rng = np.random.default_rng(6)
    load_lora(net, {n: rng.standard_normal(a.shape).astype(np.float32) for n, a in lora_state(net).items()})
    x = Tensor(rng.standard_normal((3, 6)).astype(np.float32))
    w, b = net.proj.weight.asnumpy(), net.proj.bias.asnumpy()
    a, up = net.proj.lora_down.weight.asnumpy(), net.proj.lora_up.weight.asnumpy()
    full = x.asnumpy() @ w.T + b + 2.0 * (x.asnumpy() @ a.T) @ up.T
    net.set_train(False)
    np.testing.assert_allclose(net.proj(x).asnumpy(), full, rtol=1e-5, atol=1e-5)
    net.set_train(True)
    assert not np.allclose(net.proj(x).asnumpy(), full, atol=1e-3)


def test_full_size_adapters_are_declared_not_allocated():
    net = build_hunyuan_dit()  # 13B, declared only
    rank, d = 32, 3072
    paths = apply_lora(net, rank, 32.0, HUNYUAN_BLOCK_TARGETS)
    assert len(paths) == 20 * 8 + 40 * 2 and not any("mod" in p for p in paths)
    names = [f"{n} {list(p.shape)}" for n, p in named_params(net) if ".lora_" not in n]
    assert names == layout_lines("hunyuanvideo_dit.txt")
    adapters = [p for n, p in named_params(net) if ".lora_" in n]
    assert all(p.has_init for p in adapters)  # nothing allocated: materialize fills them later
    # rank * (in + out) per layer; double: 2 x (qkv d->3d, proj d->d, fc1 d->4d, fc2 4d->d);
    # single: linear1 d->3d+4d, linear2 d+4d->d
    per_double = 2 * rank * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    per_single = rank * ((d + 7 * d) + (5 * d + d))
    expected = 20 * per_double + 40 * per_single
    assert count_params(net)[0] == 12_821_012_544 + expected
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == expected


# ---- (b) converter -------------------------------------------------------------------------------

TOOL = REPO / "tools" / "convert_weights.py"


def official_names_collapsed(layout):
    return {".".join(p for p in line.split(" ")[0].split(".") if not p.isdigit()) for line in layout_lines(layout)}


@pytest.fixture(scope="module")
def tiny_official():
    """A random checkpoint with the tiny DiT's names and shapes, which are the official names (the
    same entries as hunyuanvideo_dit.txt up to block counts), as {name: fp32 array}."""
    layout = layout_of(build_hunyuan_dit("tiny"))
    collapsed = {".".join(p for p in n.split(".") if not p.isdigit()) for n, _ in layout}
    assert collapsed == official_names_collapsed("hunyuanvideo_dit.txt")
    rng = np.random.default_rng(7)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in layout}


def test_expected_key_tables_equal_the_official_layouts(cw):
    for family, preset, layout in [("hunyuan", None, "hunyuanvideo_dit.txt"),
                                   ("hunyuan", "HYVideo-T/2", "hunyuanvideo_dit_noguidance.txt"),
                                   ("hunyuan_vae", None, "hunyuanvideo_vae.txt")]:
        if family == "hunyuan_vae" and importlib.util.find_spec("vgen.models.hunyuan.vae") is None:
            continue
        table = cw.expected_layout(family, preset)
        assert [f"{n} {list(s)}" for n, s in table] == layout_lines(layout), (family, preset)


def test_dit_module_container_bf16_converts_and_loads_strictly(cw, tiny_official, tmp_path):
    # the official DiT file is a DeepSpeed container: {"module": state_dict, ...}; as safetensors the
    # container shows as the key prefix. An "ema" container with other values must not be taken.
    ckpt = {f"module.{n}": a.astype(bfloat16) for n, a in tiny_official.items()}
    ckpt.update({f"ema.{n}": (a + 1).astype(bfloat16) for n, a in tiny_official.items()})
    src = tmp_path / "mp_rank_00_model_states.safetensors"
    save_file(ckpt, str(src))
    out = tmp_path / "dit.safetensors"

    summary = cw.convert("hunyuan", src, out, preset="tiny")
    assert summary["tensors"] == len(tiny_official) and summary["dropped"] == len(tiny_official)
    with safe_open(str(out), framework="numpy") as f:
        assert set(f.keys()) == set(tiny_official)
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    net = build_hunyuan_dit("tiny")
    load_safetensors(net, str(out), strict=True)
    got = net_arrays(net)
    for name, value in tiny_official.items():
        np.testing.assert_array_equal(got[name], value.astype(bfloat16).astype(np.float32))  # bf16 -> fp32 exact

    cw.convert("hunyuan", src, out, preset="tiny", load_key="ema")
    ema = load_file(str(out))
    name = "double_blocks.0.img_attn_qkv.weight"
    np.testing.assert_array_equal(ema[name], (tiny_official[name] + 1).astype(bfloat16).astype(np.float32))


@pytest.mark.parametrize("dtype,tag", [("bf16", "BF16"), ("fp16", "F16")])
def test_bare_fp32_checkpoint_to_half_dtypes(cw, tiny_official, tmp_path, dtype, tag):
    src = tmp_path / "bare.safetensors"
    save_file(tiny_official, str(src))
    out = tmp_path / f"dit_{dtype}.safetensors"
    assert cw.main(["hunyuan", str(src), str(out), "--preset", "tiny", "--dtype", dtype]) == 0
    with safe_open(str(out), framework="numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {tag}
    arrays = load_file(str(out))
    # independent roundings: mindspore's numpy bfloat16 cast and numpy's float16 cast
    cast = bfloat16 if dtype == "bf16" else np.float16
    for name, value in tiny_official.items():
        np.testing.assert_array_equal(arrays[name].astype(np.float32), value.astype(cast).astype(np.float32))
    load_safetensors(build_hunyuan_dit("tiny"), str(out), strict=True)


def test_vae_state_dict_and_vae_prefix_are_unwrapped(cw, tmp_path):
    vae_module = pytest.importorskip("vgen.models.hunyuan.vae")
    layout = layout_of(vae_module.build_hunyuan_vae("tiny"))
    assert {".".join(p for p in n.split(".") if not p.isdigit()) for n, _ in layout} == \
        official_names_collapsed("hunyuanvideo_vae.txt")
    rng = np.random.default_rng(8)
    arrays = {n: rng.standard_normal(s).astype(np.float32) for n, s in layout}
    # {"state_dict": {"vae.<name>": ..., "loss.<other>": ...}} as the official loader accepts it
    ckpt = {f"state_dict.vae.{n}": a for n, a in arrays.items()}
    ckpt["state_dict.loss.discriminator.weight"] = np.ones((2, 2), np.float32)
    src = tmp_path / "pytorch_model.safetensors"
    save_file(ckpt, str(src))
    out = tmp_path / "vae.safetensors"
    cw.convert("hunyuan_vae", src, out, preset="tiny")
    net = vae_module.build_hunyuan_vae("tiny")
    load_safetensors(net, str(out), strict=True)
    got = net_arrays(net)
    for name, value in arrays.items():
        np.testing.assert_array_equal(got[name], value)


def test_pickle_needs_the_explicit_flag(tmp_path):
    src = tmp_path / "pytorch_model.pt"
    src.write_bytes(b"not really a pickle")
    out = tmp_path / "out.safetensors"
    r = subprocess.run([sys.executable, str(TOOL), "hunyuan_vae", str(src), str(out)], capture_output=True,
                       text=True, timeout=300, cwd=str(REPO))
    assert r.returncode == 2, r.stderr
    assert "--allow-pickle" in r.stderr and "arbitrary code" in r.stderr and "pickle" in r.stderr
    assert not out.exists()


def test_pickle_with_the_flag_needs_torch(cw, tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    src = tmp_path / "pytorch_model.pt"
    src.write_bytes(b"not really a pickle")
    with pytest.raises(cw.ConversionError, match="needs torch"):
        cw.convert("hunyuan", src, tmp_path / "out.safetensors", allow_pickle=True, preset="tiny")


def test_layout_problems_are_named_and_nothing_is_written(cw, tiny_official, tmp_path):
    ckpt = dict(tiny_official)
    del ckpt["single_blocks.1.linear2.bias"]
    ckpt["double_blocks.0.img_attn_proj.weight"] = np.zeros((64, 63), np.float32)
    ckpt["double_blocks.0.img_attn_extra.weight"] = np.zeros((2,), np.float32)
    src = tmp_path / "broken.safetensors"
    save_file({f"module.{n}": a for n, a in ckpt.items()}, str(src))
    out = tmp_path / "out.safetensors"
    with pytest.raises(cw.ConversionError) as err:
        cw.convert("hunyuan", src, out, preset="tiny")
    msg = str(err.value)
    assert "1 missing key(s)" in msg and "single_blocks.1.linear2.bias" in msg
    assert "1 unexpected key(s)" in msg and "double_blocks.0.img_attn_extra.weight" in msg
    assert "1 mis-shaped key(s)" in msg
    assert "double_blocks.0.img_attn_proj.weight: checkpoint [64, 63] vs model [64, 64]" in msg
    assert not out.exists() and not list(tmp_path.glob(".out.safetensors.tmp*"))


def test_missing_container_and_other_preset_hint(cw, tiny_official, tmp_path):
    src = tmp_path / "ema_only.safetensors"
    save_file({f"ema.{n}": a for n, a in tiny_official.items()}, str(src))
    with pytest.raises(cw.ConversionError, match="holds \\['ema'\\] but not the requested --load-key 'module'"):
        cw.convert("hunyuan", src, tmp_path / "out.safetensors", preset="tiny")
    # a checkpoint without guidance_in: the error names the keys and the preset that fits (shapes
    # only: the full-size tables need no weights)
    found = dict(cw.expected_layout("hunyuan", "HYVideo-T/2"))
    problems = cw.check_layout(cw.expected_layout("hunyuan"), found)
    assert len(problems) == 1 and "4 missing key(s)" in problems[0] and "guidance_in.mlp.0.weight" in problems[0]
    assert cw.matching_presets("hunyuan", found, skip="HYVideo-T/2-cfgdistill") == ["HYVideo-T/2"]
