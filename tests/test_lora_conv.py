"""LoRA over convolutions and the lora_diffusion convention T2V-Turbo trains with: conv adapters
against float64 references, the two styles' init / dropout / rank clamp, the full-size UNets'
adapters against the released unet_lora.pt orders, a tiny VC2 under ms.jit and merged back to its
exact layout, and tools/convert_lora.py + tools/merge_lora.py round trips."""
import json
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from conftest import LAYOUTS, REPO
from unet_reference import conv2d, conv3d_time, f32
from vgen.models.layers.conv import Conv2d
from vgen.models.layers.init import declare_only, materialize, named_params
from vgen.models.layers.linear import Linear
from vgen.models.layers.video_unet import TimeConv
from vgen.models.lora import (LoRAConv2d, LoRAConv3d, adapter_names, adapters_disabled,
                              apply_lora, lora_delta, lora_layers, merge_lora, released_order)


def drawn(net, seed=1, scale=0.1):
    """Every parameter drawn at random (the zero-initialised up matrices would hide the adapters)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in named_params(net):
        value = (scale * rng.standard_normal(p.shape)).astype(np.float32)
        ops.assign(p, Tensor(value))
        out[name] = value.astype(np.float64)
    return out


def one_layer(layer, **lora):
    holder = ms.nn.SequentialCell([layer])
    apply_lora(holder, targets="0", **lora)
    materialize(holder, seed=0)
    return holder, drawn(holder)


@pytest.mark.parametrize("kind", ["conv2d_stride2", "time_conv"])
def test_conv_adapter_is_base_plus_scaled_update(kind):
    """y = conv(x; W, b) + (alpha/r) * up(down(x)), down with the base's kernel, stride and padding,
    up 1x1; and the same as one conv with W + (alpha/r) up @ down (what merging writes)."""
    rng = np.random.default_rng(0)
    if kind == "conv2d_stride2":
        holder, p = one_layer(Conv2d(6, 5, 3, stride=2, padding=1), rank=3, alpha=6.0)
        x = rng.standard_normal((2, 6, 9, 9))

        def ref(x, w, b):
            return conv2d(x, {"weight": w, "bias": b}, 1, stride=2)
        up = lambda h: conv2d(h, {"weight": p["0.lora_up.weight"], "bias": np.zeros(5)}, 0)
    else:
        holder, p = one_layer(TimeConv(6, 5), rank=3, alpha=6.0)
        x = rng.standard_normal((2, 6, 4, 3, 3))

        def ref(x, w, b):
            return conv3d_time(x, {"weight": w, "bias": b})

        def up(h):
            return np.einsum("bcthw,oc->bothw", h, p["0.lora_up.weight"][:, :, 0, 0, 0])
    layer = holder[0]
    assert isinstance(layer, LoRAConv2d if kind == "conv2d_stride2" else LoRAConv3d)
    assert layer.rank == 3 and layer.scale == 2.0
    got = holder(f32(x)).asnumpy()
    w, b = p["0.weight"], p["0.bias"]
    want = ref(x, w, b) + 2.0 * up(ref(x, p["0.lora_down.weight"], np.zeros(3)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    merged = w + 2.0 * lora_delta(p["0.lora_up.weight"], p["0.lora_down.weight"], w.shape)
    np.testing.assert_allclose(ref(x, merged, b), want, rtol=1e-9, atol=1e-9)


def test_rank_is_clamped_to_the_channels_and_the_scale_keeps_the_configured_rank():
    """T2V-Turbo's 4-channel in/out convs: r = 4 at rank 64, and the scale alpha/64 = 1."""
    holder = ms.nn.SequentialCell([Conv2d(4, 320, 3, padding=1), Conv2d(320, 4, 3, padding=1)])
    apply_lora(holder, 64, 64, "*", style="lora_diffusion")
    materialize(holder, seed=0)
    shapes = {n: tuple(p.shape) for n, p in named_params(holder)}
    assert shapes["0.lora_down.weight"] == (4, 4, 3, 3) and shapes["0.lora_up.weight"] == (320, 4, 1, 1)
    assert shapes["1.lora_down.weight"] == (4, 320, 3, 3) and shapes["1.lora_up.weight"] == (4, 4, 1, 1)
    assert holder[0].scale == holder[1].scale == 1.0


def test_styles_init_and_dropout():
    """peft: down ~ U(+-1/sqrt(fan_in)), dropout on the input; lora_diffusion: down ~ N(0, 1/r),
    dropout on the update (elementwise 0 or update/(1-p)), none on Conv3d adapters."""
    r, n_in = 16, 2000
    peft = ms.nn.SequentialCell([Linear(n_in, 300), Conv2d(40, 30, 3)])
    apply_lora(peft, r, r, "*", style="peft")
    materialize(peft, seed=0)
    down = peft[0].lora_down.weight.asnumpy()
    bound = 1 / np.sqrt(n_in)
    assert np.abs(down).max() <= bound and np.abs(down).max() > 0.99 * bound
    assert np.abs(peft[1].lora_down.weight.asnumpy()).max() <= 1 / np.sqrt(40 * 9)
    assert not peft[0].lora_up.weight.asnumpy().any()

    ld = ms.nn.SequentialCell([Linear(n_in, 300), TimeConv(8, 8)])
    apply_lora(ld, r, r, "*", dropout=0.5, style="lora_diffusion")
    materialize(ld, seed=0)
    std = ld[0].lora_down.weight.asnumpy().std()
    assert abs(std - 1 / r) < 0.02 / r  # 32,000 draws
    assert ld[1].lora_dropout is None  # Conv3d: no dropout (lora_diffusion's LoraInjectedConv3d)

    drawn(ld)
    x = f32(np.random.default_rng(1).standard_normal((64, n_in)))
    layer = ld[0]
    with adapters_disabled(ld):
        base = layer(x).asnumpy()
    layer.set_train(False)
    update = layer(x).asnumpy() - base
    layer.set_train(True)
    dropped = layer(x).asnumpy() - base
    kept = ~np.isclose(dropped, 0, atol=1e-6)
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(dropped[kept], 2 * update[kept], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("preset, rank, order", [("vc2-turbo", 64, "t2v_turbo_vc2_lora_r64_order.txt"),
                                                 ("ms-1.7b-turbo", 32, "t2v_turbo_ms_lora_r32_order.txt")])
def test_full_size_adapters_are_the_released_list(preset, rank, order):
    """The families' default targets on the full-size students give the released unet_lora.pt:
    575 [up, down] pairs, entry for entry in name and shape (117,142,176 / 58,497,696 elements)."""
    from vgen.models.modelscope.unet3d import build_ms_unet3d
    from vgen.models.modelscope.spec import FAMILY as MS
    from vgen.models.videocrafter.spec import FAMILY as VC2
    from vgen.models.videocrafter.unet import build_vc2_unet

    build, spec = (build_vc2_unet, VC2) if preset.startswith("vc2") else (build_ms_unet3d, MS)
    with declare_only():
        net = build(preset)
    apply_lora(net, rank, rank, spec.lora_targets, style="lora_diffusion")
    shapes = {n: list(p.shape) for n, p in named_params(net)}
    ours = [(name, shapes[name]) for name in released_order(net)]
    want = [(name, json.loads(shape)) for _, name, shape in
            (line.split(None, 2) for line in (LAYOUTS / order).read_text().splitlines())]
    assert ours == want
    assert sum(int(np.prod(s)) for _, s in ours) == {64: 117_142_176, 32: 58_497_696}[rank]


def tiny_vc2():
    from vgen.models.videocrafter.unet import build_vc2_unet

    return build_vc2_unet("tiny", channel_mult=(1, 2), attention_resolutions=(1,), time_cond_proj_dim=16)


@pytest.mark.slow
def test_tiny_vc2_with_conv_adapters_compiles_and_merges_back_to_its_layout():
    net = tiny_vc2()
    official = [(n, tuple(p.shape)) for n, p in named_params(net)]
    first_conv = net.input_blocks[0][0]
    apply_lora(net, 4, 8, "*", style="lora_diffusion")
    materialize(net, seed=0)
    kinds = {type(cell).__name__ for _, cell in lora_layers(net)}
    assert kinds == {"LoRALinear", "LoRAConv2d", "LoRAConv3d"}
    assert {n for n, p in named_params(net) if p.requires_grad} == set(adapter_names(net))
    drawn(net, scale=0.05)
    rng = np.random.default_rng(0)
    args = (f32(rng.standard_normal((1, 4, 2, 8, 8))), Tensor(np.array([500], np.int32)),
            f32(rng.standard_normal((1, 16, 32))), Tensor(np.array([8], np.int32)), f32(np.array([7.5])))
    net.set_train(False)
    eager = net(*args).asnumpy()
    compiled = ms.jit(net.construct)(*args).asnumpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)
    with adapters_disabled(net):
        base = net(*args).asnumpy()
    assert np.abs(eager - base).max() > 0.1 * np.abs(base).max()  # the adapters are live
    n_layers = len(lora_layers(net))
    assert merge_lora(net, unload=True) == n_layers
    assert [(n, tuple(p.shape)) for n, p in named_params(net)] == official
    assert net.input_blocks[0][0] is first_conv and not lora_layers(net)
    np.testing.assert_allclose(net(*args).asnumpy(), eager, rtol=1e-4, atol=1e-5)


def run_tool(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_convert_lora_round_trips_the_released_order_and_merges(tmp_path):
    """Named adapters -> the released list (keys 0..N-1, names in the metadata) -> named again,
    bit for bit; a list of the wrong length or shapes is refused naming the entry; merging the
    file into the base gives the adapted net's output."""
    from vgen.models.videocrafter.spec import FAMILY

    from conftest import compose
    from vgen.models.registry import build_family
    from vgen.models.lora import adapt_family

    cfg = compose(["model=vc2_tiny", "model.lora.rank=4"])
    family = build_family(cfg.model)
    adapt_family(family, cfg.model.lora, seed=0)
    materialize(family.net, seed=0)
    values = drawn(family.net)
    named = {n: values[n].astype(np.float32) for n in adapter_names(family.net)}
    save_file(named, str(tmp_path / "adapters.safetensors"))

    tool = REPO / "tools" / "convert_lora.py"
    out = run_tool(tool, "export", "vc2_tiny", tmp_path / "adapters.safetensors", tmp_path / "released.safetensors")
    assert out.returncode == 0, out.stderr
    released = load_file(str(tmp_path / "released.safetensors"))
    order = released_order(family.net)
    assert sorted(released, key=int) == [str(i) for i in range(len(order))]
    with safe_open(str(tmp_path / "released.safetensors"), "np") as f:
        assert json.loads(f.metadata()["names"]) == order
    for i, name in enumerate(order):
        np.testing.assert_array_equal(released[str(i)], named[name])

    out = run_tool(tool, "import", "vc2_tiny", tmp_path / "released.safetensors", tmp_path / "back.safetensors")
    assert out.returncode == 0, out.stderr
    back = load_file(str(tmp_path / "back.safetensors"))
    assert back.keys() == named.keys() and all(np.array_equal(back[k], named[k]) for k in named)

    short = {k: v for k, v in released.items() if int(k) < len(order) - 2}
    save_file(short, str(tmp_path / "short.safetensors"))
    out = run_tool(tool, "import", "vc2_tiny", tmp_path / "short.safetensors", tmp_path / "x.safetensors")
    assert out.returncode == 2 and f"{len(order) - 2} entries" in out.stderr
    bad = dict(released, **{"3": np.zeros((4, 7), np.float32)})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    out = run_tool(tool, "import", "vc2_tiny", tmp_path / "bad.safetensors", tmp_path / "x.safetensors")
    assert out.returncode == 2 and f"entry 3 ({order[3]})" in out.stderr
    assert not (tmp_path / "x.safetensors").exists()

    base = {n: values[n].astype(np.float32) for n, _ in named_params(family.net) if n not in named}
    save_file(base, str(tmp_path / "base.safetensors"))
    out = run_tool(REPO / "tools" / "merge_lora.py", tmp_path / "base.safetensors", tmp_path / "back.safetensors",
                   tmp_path / "merged.safetensors", "--scale", "1")
    assert out.returncode == 0, out.stderr
    merged = load_file(str(tmp_path / "merged.safetensors"))
    merge_lora(family.net, unload=True)
    assert FAMILY.lora_targets == ("*",)
    for name, p in named_params(family.net):
        np.testing.assert_allclose(merged[name], p.asnumpy(), rtol=1e-5, atol=1e-6)
