"""Causal-VAE training: the objective's terms against their formulas, the discriminator and LPIPS
against numpy, the frozen discriminator view's gradients, the gan_start schedule read from the
keyed draws, the family's layout, end-to-end runs through the Trainer (checkpoints in the official
VAE layout), and tools/eval_vae.py (PSNR / SSIM against hand-computed values)."""
import importlib.util
import json
import math
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import ParameterTuple, Tensor, nn
from safetensors.numpy import load_file, save_file

from conftest import REPO, compose, layout_lines, read_metrics
from vgen.models.hunyuan.vae import CausalVAE3D, build_hunyuan_vae
from vgen.models.hunyuan.vae_family import build_training_vae, check_clip, vae_arrays
from vgen.models.layers.conv import Conv3d
from vgen.models.layers.init import count_params, declare_only, materialize, named_params
from vgen.models.weights import load_arrays, load_safetensors
from vgen.models.vae.critics import LPIPS_CHANNELS, NLayerDiscriminator, build_lpips, frozen_view, min_disc_size
from vgen.objectives.vae_loss import VAEObjective, VAETrainingLoss, generator_term, hinge_d_term
from vgen.rng import sample_rngs
from vgen.runtime import setup_device

# the device is chosen once, before any kernel runs (MindSpore refuses it later): here, at collection,
# so that the in-process Trainer runs below can choose it too (they get the same choice back)
setup_device("auto")


def _load_tool(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # ms.jit resolves a compiled function's globals through its module
    spec.loader.exec_module(module)
    return module


eval_vae = _load_tool("eval_vae", REPO / "tools" / "eval_vae.py")
quickstart = _load_tool("make_quickstart_data", REPO / "tools" / "make_quickstart_data.py")


# ---- numpy references ------------------------------------------------------------------------------

def np_conv2d(x, w, b=None, stride=1, pad=0):
    """[N, C, H, W] * [O, C, k, k] (zero padding), float64."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    oh, ow = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def np_group_norm(x, groups, weight, bias, eps):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return g.reshape(x.shape) * weight[None, :, None, None] + bias[None, :, None, None]


def np_params(net):
    return {n: p.asnumpy().astype(np.float64) for n, p in named_params(net)}


def np_lpips(p, x0, x1):
    """LPIPS v0.1 (VGG) written out: lpips' scaling, torchvision VGG16 features, taps, heads."""
    shift = np.array([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = np.array([0.458, 0.448, 0.450])[None, :, None, None]
    plan = ["c0", "c2", "P", "c5", "c7", "P", "c10", "c12", "c14", "P", "c17", "c19", "c21", "P", "c24", "c26", "c28"]
    taps_after = {"c2", "c7", "c14", "c21", "c28"}

    def features(x):
        h, out = (x - shift) / scale, []
        for step in plan:
            if step == "P":
                n, c, hh, ww = h.shape
                h = h[:, :, :hh // 2 * 2, :ww // 2 * 2].reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
            else:
                i = step[1:]
                h = np.maximum(np_conv2d(h, p[f"features.{i}.weight"], p[f"features.{i}.bias"], 1, 1), 0)
                if step in taps_after:
                    out.append(h)
        return out

    total = 0.0
    for k, (f0, f1) in enumerate(zip(features(x0), features(x1))):
        f0 = f0 / (np.sqrt((f0 ** 2).sum(1, keepdims=True)) + 1e-10)
        f1 = f1 / (np.sqrt((f1 ** 2).sum(1, keepdims=True)) + 1e-10)
        total = total + np_conv2d((f0 - f1) ** 2, p[f"lin{k}.model.1.weight"]).mean(axis=(1, 2, 3))
    return total


def np_discriminator(p, video, n_layers, prefix="main"):
    """LDM's NLayerDiscriminator (GroupNorm 32) on every frame: [B, C, T, H, W] -> [B, T*h*w]."""
    b, c, t, h, w = video.shape
    x = video.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    lrelu = lambda v: np.where(v > 0, v, 0.2 * v)
    x = lrelu(np_conv2d(x, p[f"{prefix}.0.weight"], p[f"{prefix}.0.bias"], 2, 1))
    i = 2
    for n in range(1, n_layers + 1):
        x = np_conv2d(x, p[f"{prefix}.{i}.weight"], None, 2 if n < n_layers else 1, 1)
        x = lrelu(np_group_norm(x, 32, p[f"{prefix}.{i + 1}.weight"], p[f"{prefix}.{i + 1}.bias"], 1e-5))
        i += 3
    x = np_conv2d(x, p[f"{prefix}.{i}.weight"], p[f"{prefix}.{i}.bias"], 1, 1)
    return x.reshape(b, -1)


# ---- a toy autoencoder with the CausalVAE3D interface ---------------------------------------------

class ToyAutoencoder(nn.Cell):
    """1x1x1 convs for encoder and decoder (no compression), plus a discriminator and its view:
    what VAETrainingLoss reads from a net, at a size where every term is cheap."""

    latent_channels = 2
    to_gaussian = CausalVAE3D.to_gaussian

    def __init__(self, disc_layers=1, ndf=16):
        super().__init__()
        self.enc = Conv3d(3, 4, 1)
        self.dec = Conv3d(2, 3, 1)
        self.discriminator = NLayerDiscriminator(3, ndf, disc_layers)
        self.discriminator_view = frozen_view(self.discriminator)

    def moments(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)


@pytest.fixture(scope="module")
def toy():
    with declare_only():
        net = ToyAutoencoder()
    return materialize(net, seed=1)


@pytest.fixture(scope="module")
def lpips_net():
    return build_lpips(None, seed=3)


def toy_inputs(b=2, t=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.uniform(-1, 1, (b, 3, t, size, size)).astype(np.float32)
    noise = rng.standard_normal((b, 2, t, size, size)).astype(np.float32)
    return video, noise


# ---- objective terms against their formulas --------------------------------------------------------

def test_hinge_and_generator_terms_hand_computed():
    real = Tensor(np.array([[2.0, 0.5], [0.0, -1.0]], np.float32))
    fake = Tensor(np.array([[-2.0, 0.5], [1.0, 3.0]], np.float32))
    # sample 0: 0.5 * (mean(0, 0.5) + mean(0, 1.5)) = 0.5; sample 1: 0.5 * (mean(1, 2) + mean(2, 4)) = 2.25
    np.testing.assert_allclose(hinge_d_term(real, fake).asnumpy(), [0.5, 2.25])
    np.testing.assert_allclose(generator_term(fake).asnumpy(), [0.75, -2.0])


def test_loss_terms_match_their_formulas(toy, lpips_net):
    video, noise = toy_inputs()
    cell = VAETrainingLoss(toy, l1=0.7, kl=0.3, lpips_weight=0.2, gan=0.4, lpips=lpips_net)
    on = np.array([1.0, 0.0], np.float32)
    l1, kl, lp, gen, hinge = (t.asnumpy().astype(np.float64) for t in cell.terms(Tensor(video), Tensor(noise)))
    # the reference, in numpy from the toy's weights
    p = np_params(toy)
    x = video.astype(np.float64)
    moments = np.einsum("bcthw,oc->bothw", x, p["enc.weight"][:, :, 0, 0, 0]) + p["enc.bias"][None, :, None, None, None]
    mean, logvar = moments[:, :2], np.clip(moments[:, 2:], -30, 20)
    z = mean + np.exp(0.5 * logvar) * noise
    rec = np.einsum("bcthw,oc->bothw", z, p["dec.weight"][:, :, 0, 0, 0]) + p["dec.bias"][None, :, None, None, None]
    pixels = 3 * 2 * 16 * 16
    np.testing.assert_allclose(l1, np.abs(x - rec).reshape(2, -1).mean(1), rtol=1e-5)
    ref_kl = 0.5 * (mean ** 2 + np.exp(logvar) - 1 - logvar).reshape(2, -1).sum(1) / pixels
    np.testing.assert_allclose(kl, ref_kl, rtol=1e-4)
    frames = lambda v: v.transpose(0, 2, 1, 3, 4).reshape(-1, 3, 16, 16)
    np.testing.assert_allclose(lp, np_lpips(np_params(lpips_net), frames(x), frames(rec)).reshape(2, 2).mean(1),
                               rtol=1e-4, atol=1e-7)
    d_real = np_discriminator(p, x, 1, "discriminator.main")
    d_fake = np_discriminator(p, rec, 1, "discriminator.main")
    np.testing.assert_allclose(gen, -d_fake.mean(1), rtol=1e-4, atol=1e-6)
    ref_hinge = 0.5 * (np.maximum(1 - d_real, 0).mean(1) + np.maximum(1 + d_fake, 0).mean(1))
    np.testing.assert_allclose(hinge, ref_hinge, rtol=1e-4, atol=1e-6)
    # the total, gated per sample
    total = cell({"video": Tensor(video), "vae_noise": Tensor(noise), "gan_on": Tensor(on)}).asnumpy()
    np.testing.assert_allclose(total, 0.7 * l1 + 0.3 * kl + 0.2 * lp + on * (0.4 * gen + hinge), rtol=1e-5)


def test_lpips_matches_numpy(lpips_net):
    rng = np.random.default_rng(7)
    x0 = rng.uniform(-1, 1, (2, 3, 16, 20)).astype(np.float32)  # odd sizes after pooling: floor mode
    x1 = np.clip(x0 + 0.3 * rng.standard_normal(x0.shape), -1, 1).astype(np.float32)
    got = lpips_net(Tensor(x0), Tensor(x1)).asnumpy()
    ref = np_lpips(np_params(lpips_net), x0.astype(np.float64), x1.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    np.testing.assert_allclose(lpips_net(Tensor(x0), Tensor(x0)).asnumpy(), 0.0, atol=1e-7)


def test_lpips_names_and_loading(lpips_net, tmp_path):
    names = [f"{n} {list(p.shape)}" for n, p in named_params(lpips_net)]
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert [n.split()[0] for n in names] == ([f"features.{i}.{k}" for i in convs for k in ("weight", "bias")]
                                             + [f"lin{k}.model.1.weight" for k in range(5)])
    assert names[-5:] == [f"lin{k}.model.1.weight [1, {c}, 1, 1]" for k, c in enumerate(LPIPS_CHANNELS)]
    assert count_params(lpips_net)[0] == 14_714_688 + sum(LPIPS_CHANNELS)  # torchvision VGG16 convs + heads
    assert not any(p.requires_grad for p in lpips_net.get_parameters())
    # a file in those names (extra keys such as a VGG classifier are ignored) loads exactly
    other = build_lpips(None, seed=11)
    path = tmp_path / "lpips.safetensors"
    save_file({**{n: p.asnumpy() for n, p in named_params(other)}, "classifier.0.weight": np.zeros((2, 2), np.float32)},
              str(path))
    loaded = build_lpips(str(path))
    for (n, a), (_, b) in zip(named_params(loaded), named_params(other)):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=n)


def test_discriminator_matches_numpy_and_min_size():
    video, _ = toy_inputs(b=2, t=3, size=12)
    with declare_only():
        disc = NLayerDiscriminator(3, 32, 2)
    materialize(disc, seed=4)
    got = disc(Tensor(video)).asnumpy()
    ref = np_discriminator(np_params(disc), video.astype(np.float64), 2)
    assert got.shape == (2, 3 * 1 * 1)  # 12 -> 6 -> 3 -> 2 -> 1 per side (12 = min_disc_size(2))
    assert min_disc_size(2) == 12
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# ---- the frozen view: which parameters each adversarial term moves ----------------------------------

def _split_grads(net, fn, *inputs, jit=False):
    params = [(n, p) for n, p in named_params(net) if p.requires_grad]
    grad = ms.grad(fn, grad_position=None, weights=ParameterTuple([p for _, p in params]))
    grads = (ms.jit(grad) if jit else grad)(*inputs)
    gen = {n: float(np.abs(g.asnumpy()).max()) for (n, _), g in zip(params, grads) if not n.startswith("discriminator")}
    disc = {n: float(np.abs(g.asnumpy()).max()) for (n, _), g in zip(params, grads) if n.startswith("discriminator")}
    return gen, disc


def test_frozen_view_shares_the_parameters(toy):
    for mine, theirs in zip(toy.discriminator_view.main, toy.discriminator.main):
        if hasattr(theirs, "weight"):
            assert mine.weight is theirs.weight
    names = [n for n, _ in named_params(toy)]
    assert not any(n.startswith("discriminator_view") for n in names)
    # conv0 (weight, bias), conv2 (weight), norm3 (weight, bias), conv5 (weight, bias)
    assert sum(n.startswith("discriminator.") for n in names) == 7


@pytest.mark.parametrize("jit", [False, True])
def test_adversarial_terms_move_only_their_side(toy, jit):
    video, noise = (Tensor(a) for a in toy_inputs(t=1))
    on = Tensor(np.ones(2, np.float32))
    cell = VAETrainingLoss(toy, l1=1.0, kl=1e-3, gan=0.5)

    def generator_only(v, n, g):
        return cell.terms(v, n)[3].sum()

    def hinge_only(v, n, g):
        return cell.terms(v, n)[4].sum()

    gen, disc = _split_grads(toy, generator_only, video, noise, on, jit=jit)
    assert all(v > 0 for v in gen.values()), gen  # the autoencoder learns to fool the discriminator
    assert all(v == 0 for v in disc.values()), disc  # ... through the frozen view only
    gen, disc = _split_grads(toy, hinge_only, video, noise, on, jit=jit)
    assert all(v == 0 for v in gen.values()), gen  # the hinge sees stop_gradient(x')
    # every discriminator weight learns; the last bias cancels while all logits are inside (-1, 1)
    # (d hinge / d bias = 0.5 (-1 + 1)), as they are at initialisation
    assert all(v > 0 for n, v in disc.items() if n != "discriminator.main.5.bias"), disc


class Through(nn.Cell):
    """Stands for ZeRO-3's Gathered (shard -> full parameter) without communication."""

    def construct(self, p):
        return p * 1.0


def test_frozen_view_holds_under_zero3_sources():
    """ZeRO-3 gives every ShardableLayer of the net (the view's too) its own readers; the view's
    layers still stop the gradient after reading."""
    from vgen.models.layers.sharding import ShardableLayer
    from vgen.parallel.zero import Sources

    with declare_only():
        net = ToyAutoencoder()
    materialize(net, seed=2)
    for _, cell in net.cells_and_names():  # as install_gathers walks the net
        if isinstance(cell, ShardableLayer):
            cell.sources = Sources()
            for attr in cell.shardable:
                if getattr(cell, attr, None) is not None:
                    setattr(cell.sources, attr, Through())
    video, noise = (Tensor(a) for a in toy_inputs(t=1))
    on = Tensor(np.ones(2, np.float32))
    cell = VAETrainingLoss(net, l1=1.0, kl=1e-3, gan=0.5)

    def generator_only(v, n, g):
        return cell.terms(v, n)[3].sum()

    gen, disc = _split_grads(net, generator_only, video, noise, on, jit=True)
    assert all(v > 0 for v in gen.values()) and all(v == 0 for v in disc.values()), (gen, disc)


def test_gan_off_leaves_the_discriminator_without_gradient(toy):
    video, noise = (Tensor(a) for a in toy_inputs(t=1))
    cell = VAETrainingLoss(toy, l1=1.0, kl=1e-3, gan=0.5)

    def total(v, n, g):
        return cell({"video": v, "vae_noise": n, "gan_on": g}).mean()

    gen, disc = _split_grads(toy, total, video, noise, Tensor(np.zeros(2, np.float32)))
    assert all(v == 0 for v in disc.values()) and all(v > 0 for v in gen.values())


# ---- gan_start_step from the step ------------------------------------------------------------------

def test_gan_on_follows_the_step():
    obj = VAEObjective(gan=0.1, gan_start_step=5)
    streams = ["timestep", "noise", "text_drop", "vae_noise"]
    for step, expected in ((0, 0.0), (4, 0.0), (5, 1.0), (123, 1.0)):
        rngs = sample_rngs(42, step, [6, 7, 8], streams)
        out = obj.draw(rngs, (4, 2, 4, 4), step)
        assert out["gan_on"].dtype == np.float32
        np.testing.assert_array_equal(out["gan_on"], np.full(3, expected))
    rngs = sample_rngs(0, 100, [0], streams)
    assert VAEObjective(gan=0.0).draw(rngs, None, 100)["gan_on"][0] == 0.0  # no GAN: always off


def test_objective_refuses_lpips_without_weights():
    with pytest.raises(ValueError, match="lpips_weights"):
        VAEObjective(lpips=0.1)
    with pytest.raises(ValueError, match="kl"):
        VAEObjective(kl=-1.0)


# ---- the family ------------------------------------------------------------------------------------

def test_family_net_is_the_official_layout_then_the_discriminator():
    full = build_training_vae("884-16c", disc_layers=3)  # declared only: no memory
    lines = [f"{n} {list(p.shape)}" for n, p in named_params(full)]
    official = layout_lines("hunyuanvideo_vae.txt")
    assert lines[:len(official)] == official
    disc = lines[len(official):]
    assert all(line.startswith("discriminator.main.") for line in disc)
    # LDM's PatchGAN (ndf 64, 3 layers; GroupNorm affine in place of BatchNorm affine)
    k = 16
    expected = (3 * 64 * k + 64) + (64 * 128 * k + 2 * 128) + (128 * 256 * k + 2 * 256) + (256 * 512 * k + 2 * 512) \
        + (512 * k + 1)
    assert count_params(full)[0] == 246_478_803 + expected == 246_478_803 + 2_765_633
    tiny = build_training_vae("tiny")
    assert [f"{n} {list(p.shape)}" for n, p in named_params(tiny)] == \
        [f"{n} {list(p.shape)}" for n, p in named_params(build_hunyuan_vae("tiny"))]


def test_family_specs_and_input_checks():
    from vgen.models.hunyuan.vae_family import build

    cfg = compose(["model=hunyuan_vae_tiny", "model.loss.gan=0.1"]).model
    fam = build(cfg)
    assert fam.input_kind == "pixels" and fam.text.dim == 0
    assert fam.latent.channels == 4 and fam.latent.compression == (4, 8, 8) and fam.latent.size == (2, 4, 4)
    assert fam.latent.latent_shape(17, 256, 256) == (4, 5, 32, 32)
    assert fam.no_decay("discriminator.main.2.weight", 4) and not fam.no_decay("encoder.conv_in.conv.weight", 5)
    assert len(fam.blocks()) == 8
    batch = {"video": np.zeros((2, 3, 5, 32, 32), np.float32), "vae_noise": np.zeros((2, 4, 2, 4, 4), np.float32),
             "gan_on": np.zeros(2, np.float32)}
    assert {k: a.shape for k, a in fam.model_inputs(batch).items()} == \
        {"video": (2, 3, 5, 32, 32), "vae_noise": (2, 4, 2, 4, 4), "gan_on": (2,)}
    with pytest.raises(ValueError, match="4k\\+1"):
        fam.model_inputs({**batch, "video": np.zeros((2, 3, 8, 32, 32), np.float32)})
    with pytest.raises(ValueError, match="disc_layers"):
        check_clip((1, 3, 5, 16, 16), 3)
    with pytest.raises(ValueError, match="multiples of 8"):
        check_clip((1, 3, 5, 36, 32))


def test_experiment_recipe_composes():
    cfg = compose(["experiment=hunyuan_vae/train_256x256x17", "data.csv_path=x.csv"])
    assert cfg.model.family == "hunyuan_vae" and cfg.model.preset == "884-16c"
    assert cfg.data.kind == "video" and cfg.data.num_frames == 17 and list(cfg.data.resolution) == [256, 256]
    assert cfg.model.loss.kl == 1e-6 and cfg.model.loss.gan == 0.05 and cfg.parallel.zero_stage == 2


# ---- end to end through the Trainer ---------------------------------------------------------------

@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory):
    return quickstart.build(str(tmp_path_factory.mktemp("qs")), 8, 0, 0)


def train(run_dir, csv, extra=()):
    from vgen.train.trainer import Trainer

    cfg = compose(["model=hunyuan_vae_tiny", "data=video", f"data.csv_path={csv}", "data.num_frames=5",
                   "data.resolution=[32,32]", "schedule.max_steps=3", "schedule.log_every=1", "progress=false",
                   *extra])
    run_dir.mkdir(parents=True, exist_ok=True)
    Trainer(cfg, run_dir).setup().run()
    return cfg, read_metrics(run_dir)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, clips_csv):
    root = tmp_path_factory.mktemp("gan")
    lpips_file = root / "lpips.safetensors"
    save_file({n: p.asnumpy() for n, p in named_params(build_lpips(None, seed=5))}, str(lpips_file))
    cfg, metrics = train(root / "run", clips_csv, ["model.loss.gan=0.1", "model.loss.gan_start_step=2",
                                                   "model.loss.lpips=0.1", f"model.loss.lpips_weights={lpips_file}",
                                                   "schedule.ckpt_every=1"])
    return cfg, metrics, root / "run" / "checkpoints"


@pytest.mark.slow
def test_training_writes_the_official_vae_layout(tmp_path, clips_csv):
    cfg, metrics = train(tmp_path / "run", clips_csv)
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(math.isfinite(m["loss"]) for m in metrics)
    path = tmp_path / "run" / "checkpoints" / "step_3" / "model.safetensors"
    fresh = materialize(build_hunyuan_vae("tiny"), seed=cfg.seed)
    init = {n: p.asnumpy() for n, p in named_params(fresh)}
    load_safetensors(fresh, str(path))  # strict: exactly the official names and shapes
    assert any(not np.array_equal(init[n], p.asnumpy()) for n, p in named_params(fresh))  # it trained


@pytest.mark.slow
def test_gan_training_checkpoint_and_schedule(gan_run):
    cfg, metrics, ckpts = gan_run
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(math.isfinite(m["loss"]) for m in metrics)
    model = load_file(str(ckpts / "step_3" / "model.safetensors"))
    init = {n: p.asnumpy() for n, p in named_params(materialize(build_training_vae("tiny", 3), seed=cfg.seed))}
    disc = {n for n in init if n.startswith("discriminator.")}
    vae_names = {n for n, _ in named_params(build_hunyuan_vae("tiny"))}
    assert set(model) == vae_names | disc  # no LPIPS weights, nothing of the frozen view
    fresh = materialize(build_hunyuan_vae("tiny"), seed=0)
    load_arrays(fresh, vae_arrays(model), "step_3", strict=True)
    # the adversarial terms start at update gan_start_step = 2 (the third step): the discriminator
    # keeps its initial weights (no gradient, no weight decay) through steps 1 and 2, then learns
    for step, moved in ((1, False), (2, False), (3, True)):
        arrays = load_file(str(ckpts / f"step_{step}" / "model.safetensors"))
        changed = [n for n in disc if not np.array_equal(arrays[n], init[n])]
        assert bool(changed) == moved, (step, changed)
        assert any(not np.array_equal(arrays[n], init[n]) for n in vae_names)


# ---- tools/eval_vae.py ------------------------------------------------------------------------------

def test_psnr_hand_computed():
    rng = np.random.default_rng(0)
    ref = rng.uniform(20, 200, (3, 3, 16, 16))
    assert eval_vae.psnr(ref, ref) == math.inf
    assert eval_vae.psnr(ref, ref + 10.0) == pytest.approx(20 * math.log10(255 / 10))
    # per-frame PSNRs are averaged: offsets 5 and 15 on two frames
    two = ref[:2] + np.array([5.0, 15.0])[:, None, None, None]
    assert eval_vae.psnr(ref[:2], two) == pytest.approx(np.mean([20 * math.log10(255 / d) for d in (5, 15)]))


def test_ssim_hand_computed():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 255, (2, 3, 24, 20))
    assert eval_vae.ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    # flat images: no variance, SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 100.0, 130.0, (0.01 * 255) ** 2
    flat = np.full((1, 1, 16, 16), a)
    assert eval_vae.ssim(flat, flat + (b - a)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    # the window: MATLAB's fspecial('gaussian', 11, 1.5), normalised
    g = eval_vae.gaussian_window()
    assert g.sum() == pytest.approx(1.0) and g.argmax() == 5
    assert g[5] / g[4] == pytest.approx(math.exp(1 / (2 * 1.5 ** 2)))
    with pytest.raises(ValueError, match="11x11"):
        eval_vae.ssim(flat[..., :10, :10], flat[..., :10, :10])


def test_ssim_matches_skimage_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 255, (1, 3, 32, 40))
    test = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255)
    expected = metrics.structural_similarity(ref[0].transpose(1, 2, 0), test[0].transpose(1, 2, 0), channel_axis=-1,
                                             gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                             data_range=255)
    assert eval_vae.ssim(ref, test) == pytest.approx(expected, rel=1e-6)
    assert eval_vae.psnr(ref, test) == pytest.approx(metrics.peak_signal_noise_ratio(ref[0], test[0], data_range=255))


@pytest.mark.slow
def test_eval_vae_on_two_clips(gan_run, clips_csv, tmp_path, capsys):
    _, _, ckpts = gan_run
    out = tmp_path / "summary.json"
    eval_vae.main(["--model", "hunyuan_vae_tiny", "--weights", str(ckpts / "step_3" / "model.safetensors"),
                   "--videos", clips_csv, "--frames", "5", "--size", "32", "--limit", "2", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert len(summary["clips"]) == 2 and summary["frames"] == 5 and summary["size"] == [32, 32]
    for clip in summary["clips"]:
        assert 0 < clip["psnr"] < 60 and -1 <= clip["ssim"] <= 1
    assert summary["mean"]["psnr"] == pytest.approx(np.mean([c["psnr"] for c in summary["clips"]]))
    printed = capsys.readouterr().out
    assert "clip_00000.mp4" in printed and "mean over 2 clips" in printed
    # a clip reconstructed by itself: the tool's metrics of the identity are inf / 1
    clip = eval_vae.to_255(np.random.default_rng(0).uniform(-1, 1, (5, 3, 16, 16)))
    assert eval_vae.psnr(clip, clip) == math.inf and eval_vae.ssim(clip, clip) == pytest.approx(1.0)
