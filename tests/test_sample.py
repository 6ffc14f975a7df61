"""vgen-sample: the samplers against their formulas (an oracle denoiser gives back its data point),
classifier-free guidance against separate conditional and unconditional calls, the unconditional
inputs of each caption-dropout kind, and end to end: a video per landed family from a tiny
checkpoint (its EMA weights), the same seed giving the same video and another seed another."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, tool_module
from tiny_tokenizers import write_clip_tokenizer, write_llama_tokenizer, write_step_tokenizers
from vgen.config.validate import ConfigError
from vgen.objectives.iddpm import IDDPM
from vgen.rng import keyed_rng
from vgen.runtime import setup_device

setup_device("auto")


# ---- samplers against their formulas ----------------------------------------------------------------

def test_respaced_steps_are_the_official_spacing():
    """space_timesteps(1000, "100"): indices round(i * 999 / 99) taken with a running float stride;
    the respaced chain keeps the original alphas_cumprod at them."""
    d = IDDPM(1000, "linear", True, 100)
    tables, kept = d.respaced(100)
    official, cur = [], 0.0
    for _ in range(100):
        official.append(round(cur))
        cur += 999 / 99
    assert list(kept) == official
    np.testing.assert_allclose(tables.alphas_cumprod, d.tables.alphas_cumprod[kept], rtol=1e-12)


@pytest.mark.parametrize("method", ["iddpm", "ddim"])
def test_iddpm_samplers_give_back_the_data_of_an_oracle(method):
    """A denoiser that knows x0 predicts eps = (x - sqrt(ac) x0) / sqrt(1 - ac): DDIM (eta 0) and
    ancestral sampling (the last posterior step has coef1 = 1, coef2 = 0) both end at x0."""
    d = IDDPM(1000, "linear", True, 100)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2, 4, 3, 2, 2))
    ac = d.tables.alphas_cumprod
    seen = []

    def oracle(x, t):
        seen.append(int(t[0]))
        a = ac[t].reshape(-1, 1, 1, 1, 1)
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        return np.concatenate([eps, np.zeros_like(eps)], 1)  # variance channels: the middle of the range

    rngs = [keyed_rng(s, 0, 0, "sampler_noise") for s in (0, 1)]
    out = d.sample(oracle, rng.standard_normal(x0.shape).astype(np.float32), rngs, steps=20, method=method)
    np.testing.assert_allclose(out, x0, atol=1e-4)
    assert seen[0] == 999 and seen[-1] == 0 and len(seen) == 20


def test_leading_ddim_is_lvdms_uniform_schedule():
    """lvdm's DDIMSampler (make_ddim_timesteps "uniform", ddim_eta 0) written out: timesteps
    1, 21, .., 981 at 50 steps, alphas_prev[0] = alphas_cumprod[0], x_prev = sqrt(a_prev) x0_hat +
    sqrt(1 - a_prev) eps; an arbitrary denoiser gives the same chain."""
    d = IDDPM(1000, "scaled_linear", False, 50, ddim_timesteps="leading")
    ac = d.tables.alphas_cumprod
    timesteps, alphas, prev = d.ddim_schedule(50)
    assert list(timesteps) == list(range(1, 1000, 20))
    np.testing.assert_allclose(prev, np.concatenate([[ac[0]], ac[timesteps[:-1]]]), rtol=0)
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 4)) * 0.3

    def model(x, t):
        return np.einsum("oc,bc...->bo...", weights, x) * np.cos(t / 500.0).reshape(-1, 1, 1, 1, 1)

    noise = rng.standard_normal((2, 4, 2, 3, 3)).astype(np.float32)
    x = noise.astype(np.float64)
    ts = list(range(0, 1000, 20))
    for i in reversed(range(len(ts))):
        t = ts[i] + 1
        a, a_prev = ac[t], ac[ts[i - 1] + 1] if i > 0 else ac[0]
        eps = model(x.astype(np.float32), np.full(2, t)).astype(np.float64)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    np.testing.assert_allclose(d.sample(model, noise, None, 50, "ddim"), x, rtol=1e-5, atol=1e-5)


def test_flow_sampler_is_euler_on_the_shifted_schedule():
    """A constant velocity v moves x by v * (sigma_N - sigma_0) = -v in HunyuanVideo's convention."""
    from vgen.objectives.rectified_flow import RectifiedFlow

    flow = RectifiedFlow(sample_shift=7.0, sampling_steps=5)
    out = flow.sample(lambda x, t: np.ones_like(x), np.zeros((1, 3), np.float32), shift=3.0)
    np.testing.assert_allclose(out, -np.ones((1, 3)), rtol=1e-6)
    assert flow.sigmas(4, shift=3.0)[1] == pytest.approx(3 * 0.75 / (1 + 2 * 0.75))


# ---- guidance and conditioning on the tiny models ---------------------------------------------------------

def tiny_family(model: str, *overrides):
    """Every weight drawn (the initialisation zeroes output layers: every output would be 0)."""
    from mindspore import Tensor

    from vgen.models.layers.init import named_params
    from vgen.models.registry import build_family
    from vgen.models.weights import fill_parameters

    family = build_family(compose([f"model={model}", *overrides]).model)
    fill_parameters(family.net, seed=0)
    rng = np.random.default_rng(0)
    for _, q in named_params(family.net):
        q.set_data(Tensor(q.asnumpy() + rng.normal(0, 0.05, q.shape).astype(np.float32)))
    return family


class FakeEncoders:
    """Text encoders that record their prompts: states drawn from each prompt's characters."""

    def __init__(self, family):
        self.text, self.calls = family.text, []

    def __call__(self, prompts, images=None):
        self.calls.append(list(prompts))
        rows = [self.one(np.random.default_rng([ord(c) for c in p] or [0])) for p in prompts]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def one(self, rng):
        t = self.text
        out = {"text_emb": rng.standard_normal((t.length, t.dim)).astype(np.float32),
               "text_mask": (np.arange(t.length) < t.length // 2).astype(np.int32)}
        if t.pooled_dim:
            shape = (t.pooled_length, t.pooled_dim) if t.pooled_length else (t.pooled_dim,)
            out["text_pooled"] = rng.standard_normal(shape).astype(np.float32)
        return out


@pytest.mark.parametrize("model", ["opensora_stdit2_tiny", "stepvideo_tiny"])
def test_guidance_is_u_plus_s_times_c_minus_u(model):
    """One call over both branches equals separate calls combined as u + s (c - u); an IDDPM model's
    variance channels are the conditional branch's."""
    from vgen.sample.conditioning import conditioning
    from vgen.sample.guidance import GuidedModel
    from vgen.sample.sampler import Sampler

    cfg = compose([f"model={model}", "sample.cfg_scale=4.5"])
    family = tiny_family(model)
    sampler = Sampler(family, cfg.model, cfg.sample, jit=False)
    g = sampler.geometry
    cond, uncond = conditioning(family, FakeEncoders(family), ["a", "b"], g, cfg.sample)
    x = np.random.default_rng(1).standard_normal((2, *g.latent)).astype(np.float32)
    t = np.array([500, 20], np.int32) if sampler.kind == "iddpm" else np.array([0.3, 0.8], np.float32)
    guided = sampler.model.condition(cond, uncond)(x, t)
    plain = GuidedModel(family, 1.0, jit=False)
    c, u = plain.condition(cond, None)(x, t), plain.condition(uncond, None)(x, t)
    ch = g.latent[0]
    np.testing.assert_allclose(guided[:, :ch], u[:, :ch] + 4.5 * (c[:, :ch] - u[:, :ch]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(guided[:, ch:], c[:, ch:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(c, u)  # the branches differ: guidance does something


def test_unconditional_inputs_follow_the_familys_caption_dropout():
    """drop_to model (STDiT): the same text with the dropout flags set; drop_to empty (Step-Video):
    the negative prompt encoded. Every frame is generated; size / fps conditioning from the sample."""
    from vgen.sample.conditioning import conditioning
    from vgen.sample.geometry import sample_geometry

    for model, drop in (("opensora_stdit2_tiny", "model"), ("stepvideo_tiny", "empty")):
        cfg = compose([f"model={model}", "sample.negative_prompt=blurry", "sample.fps=12"])
        family = tiny_family(model)
        enc = FakeEncoders(family)
        g = sample_geometry(cfg.sample, family.latent)
        cond, uncond = conditioning(family, enc, ["a cat", "a dog"], g, cfg.sample)
        assert family.text.drop_to == drop and set(cond) == set(uncond) == set(family.fields)
        if drop == "model":
            assert enc.calls == [["a cat", "a dog"]]
            assert not cond["text_drop"].any() and uncond["text_drop"].all()
            np.testing.assert_array_equal(cond["text_emb"], uncond["text_emb"])
            assert cond["frame_mask"].all() and cond["frame_mask"].shape == (2, g.latent[1])
            assert (cond["height"][0], cond["width"][0], cond["fps"][0]) == (g.height, g.width, 12.0)
        else:
            assert enc.calls == [["a cat", "a dog"], ["blurry", "blurry"]]
            assert not np.array_equal(cond["text_emb"], uncond["text_emb"])


def test_sample_sizes_the_vae_cannot_make_name_the_nearest():
    from vgen.models.registry import build_family
    from vgen.sample.geometry import sample_geometry

    hunyuan = build_family(compose(["model=hunyuan_tiny"]).model).latent
    assert sample_geometry(compose(["sample.num_frames=9", "sample.resolution=[32,48]"]).sample, hunyuan).latent == \
        (16, 3, 4, 6)
    with pytest.raises(ConfigError, match="sample.num_frames=9"):
        sample_geometry(compose(["sample.num_frames=10"]).sample, hunyuan)
    step = build_family(compose(["model=stepvideo_tiny"]).model).latent
    assert sample_geometry(compose(["sample.num_frames=1"]).sample, step).latent[1] == 1
    with pytest.raises(ConfigError, match="sample.num_frames=17"):
        sample_geometry(compose(["sample.num_frames=20"]).sample, step)


def test_an_autoencoder_family_is_refused():
    from vgen.models.registry import build_family
    from vgen.sample.sampler import Sampler

    cfg = compose(["model=hunyuan_vae_tiny"])
    with pytest.raises(ConfigError, match="autoencoder"):
        Sampler(build_family(cfg.model), cfg.model, cfg.sample)


def test_lcm_sampling_is_for_a_consistency_student_at_4_steps_without_cfg():
    from vgen.models.registry import build_family
    from vgen.sample.sampler import Sampler

    cfg = compose(["model=vc2_tiny", "sample.method=lcm"])
    with pytest.raises(ConfigError, match="embeds its guidance"):
        Sampler(build_family(cfg.model), cfg.model, cfg.sample, jit=False)
    cfg = compose(["model=vc2_tiny", "model.time_cond_proj_dim=16", "sample.method=lcm"])
    sampler = Sampler(build_family(cfg.model), cfg.model, cfg.sample, jit=False)
    assert (sampler.steps, sampler.cfg_scale, sampler.method) == (4, 1.0, "lcm")
    cfg = compose(["model=vc2_tiny", "model.time_cond_proj_dim=16", "sample.method=lcm", "sample.steps=8"])
    assert Sampler(build_family(cfg.model), cfg.model, cfg.sample, jit=False).steps == 8


# ---- end to end: a tiny checkpoint of every family -> videos ---------------------------------------------

PROMPTS = ["a red circle moving left on a black background", "a blue square moving up on a white background"]
STDIT_TINY_ENCODERS = ["model.caption_channels=32", "model.text_encoder.name=t5-tiny",
                       "model.text_encoder.max_length=16", "model.vae.name=sd-vae-tiny"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    quickstart = tool_module("make_quickstart_data")
    words = quickstart.caption_vocabulary()
    quickstart.write_tokenizer(str(root / "t5.json"))
    write_step_tokenizers(root, PROMPTS)
    return {"opensora": [f"model.text_encoder.tokenizer={root / 't5.json'}"],
            "hunyuan": [f"model.text_encoder.tokenizer={write_llama_tokenizer(root / 'llama', words)}",
                        f"model.text_encoder_2.tokenizer={write_clip_tokenizer(root / 'clip.json', words)}"],
            "stepvideo": [f"model.text_encoder.tokenizer={root / 'step'}",
                          f"model.text_encoder_2.tokenizer={root / 'bert'}"],
            "vc2": [f"model.text_encoder.tokenizer={write_clip_tokenizer(root / 'open_clip.json', words)}"],
            "ms": [f"model.text_encoder.tokenizer={write_clip_tokenizer(root / 'sd2_clip.json', words)}"]}


FAMILIES = {  # model overrides, tokenizers, (frames, height, width) of the sampled clip
    "opensora_stdit": (["model=opensora_stdit_tiny", "model.depth=2", *STDIT_TINY_ENCODERS], "opensora", (4, 128, 128)),
    "opensora_stdit2": (["model=opensora_stdit2_tiny", "model.depth=2"], "opensora", (4, 64, 64)),
    "hunyuan": (["model=hunyuan_tiny", "model.depth_double=1", "model.depth_single=1"], "hunyuan", (5, 32, 32)),
    "stepvideo": (["model=stepvideo_tiny", "model.depth=1"], "stepvideo", (17, 32, 32)),
    "vc2": (["model=vc2_tiny", "model.channel_mult=[1,2]", "model.attention_resolutions=[1]"], "vc2", (2, 32, 32)),
    "ms": (["model=ms_tiny", "model.block_out_channels=[32,64]"], "ms", (2, 32, 32)),
}
SIZES = {"opensora_stdit": [], "opensora_stdit2": ["sample.resolution=[64,64]"],
         "hunyuan": ["sample.num_frames=5", "sample.resolution=[32,32]"],
         "stepvideo": ["sample.num_frames=17", "sample.resolution=[32,32]"],
         "vc2": ["sample.num_frames=2", "sample.resolution=[32,32]"],
         "ms": ["sample.num_frames=2", "sample.resolution=[32,32]"]}
SAMPLERS = {"opensora_stdit": "iddpm", "opensora_stdit2": "iddpm", "hunyuan": "euler_flow", "stepvideo": "euler_flow",
            "vc2": "ddim", "ms": "ddim"}


def train_tiny(run: Path, model):
    """Two steps on synthetic latents with EMA: a checkpoint whose EMA differs from its weights."""
    from vgen.train.trainer import Trainer

    Trainer(compose([*model, "data=synthetic", "data.num_samples=4", "schedule.max_steps=2", "schedule.ckpt_every=2",
                     "schedule.ema_decay=0.5", "schedule.lr=1e-3", "progress=false", "jit=false"]), run).setup().run()
    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_vgen_sample_writes_a_video_per_prompt_from_a_tiny_checkpoint(tmp_path, tokenizers, name):
    import decord  # noqa: E402  (after mindspore)

    from vgen.sample.run import sample

    model, tok, (frames, height, width) = FAMILIES[name]
    run = train_tiny(tmp_path / "run", model)
    out = tmp_path / "samples"
    cfg = compose([*model, *tokenizers[tok], *SIZES[name], f"sample.checkpoint={run}", f"sample.out_dir={out}",
                   f"sample.prompts={json.dumps(PROMPTS)}", "sample.steps=3", "sample.seed=7", "sample.batch_size=2",
                   "jit=false"])  # PyNative: 3 steps need no compile (the graph path: the test below)
    written = sample(cfg)
    assert [p.name for p in written] == [f"0000-{'_'.join(PROMPTS[0].split())[:48]}-seed7.mp4",
                                         f"0001-{'_'.join(PROMPTS[1].split())[:48]}-seed8.mp4"]
    for i, path in enumerate(written):
        video = decord.VideoReader(str(path))
        assert (len(video), *video[0].shape) == (frames, height, width, 3)
        meta = json.loads(path.with_suffix(".json").read_text())
        assert (meta["prompt"], meta["seed"], meta["steps"], meta["file"]) == (PROMPTS[i], 7 + i, 3, path.name)
        assert meta["sampler"] == SAMPLERS[name]  # each family's published sampler by default
        assert Path(meta["checkpoint"]).name == "step_2"
    assert not list(out.glob(".*"))  # nothing half-written left behind


@pytest.mark.slow
def test_same_seed_same_video_other_seed_another(tmp_path, tokenizers):
    """A video depends on its seed only, not on the batch it was drawn in; the EMA weights are the
    ones loaded."""
    from vgen.models.layers.init import named_params
    from vgen.models.registry import build_family
    from vgen.parallel.mesh import Mesh
    from vgen.sample.conditioning import conditioning
    from vgen.sample.run import find_checkpoint, load_weights
    from vgen.sample.sampler import Sampler
    from vgen.train.checkpoint import CheckpointReader

    model, tok, _ = FAMILIES["opensora_stdit2"]
    run = train_tiny(tmp_path / "run", model)
    cfg = compose([*model, *tokenizers[tok], f"sample.checkpoint={run}", "sample.steps=3"])
    family = build_family(cfg.model)
    ckpt, _ = find_checkpoint(str(run))
    load_weights(cfg, family, Mesh(), ckpt, "CPU")
    ema = CheckpointReader(ckpt).arrays("ema")
    for n, q in named_params(family.net):
        np.testing.assert_array_equal(q.asnumpy(), ema[n])
    sampler = Sampler(family, cfg.model, cfg.sample)
    enc = FakeEncoders(family)
    cond, uncond = conditioning(family, enc, ["a", "a", "b"], sampler.geometry, cfg.sample)
    both = sampler.latents(cond, uncond, [3, 4, 5])
    one = sampler.latents({k: v[1:2] for k, v in cond.items()}, {k: v[1:2] for k, v in uncond.items()}, [4])
    np.testing.assert_allclose(one[0], both[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(both[0], both[1], atol=1e-3)  # same prompt, other seed


def random_pretrained(path: Path, model) -> Path:
    """Every weight of the tiny model drawn, in a safetensors file (model.pretrained)."""
    from safetensors.numpy import save_file

    from vgen.models.layers.init import named_params

    family = tiny_family(*model)
    save_file({n: q.asnumpy() for n, q in named_params(family.net)}, str(path))
    return path


@pytest.mark.slow
@pytest.mark.dist
def test_sequence_parallel_sampling_equals_one_process(tmp_path, tokenizers):
    """vgen-sample under msrun with Ulysses SP 2 writes the latents one process draws (1e-5)."""
    from conftest import cli

    weights = random_pretrained(tmp_path / "w.safetensors", ["stepvideo_tiny", "model.depth=1"])
    common = ["model=stepvideo_tiny", "model.depth=1", *tokenizers["stepvideo"], f"model.pretrained={weights}",
              "sample.num_frames=17", "sample.resolution=[32,32]", f"sample.prompts={json.dumps(PROMPTS)}",
              "sample.steps=3", "sample.decode=false", "sample.batch_size=2", "jit=false"]
    for name, par in (("one", []), ("sp2", ["parallel.workers=2", "parallel.sp=2"])):
        cli("vgen-sample", *common, *par, f"sample.out_dir={tmp_path / name}", f"run_dir={tmp_path / 'run'}",
            check=True, timeout=600)
    for i in range(2):
        stem = f"{i:04d}-{'_'.join(PROMPTS[i].split())[:48]}-seed{i}.npz"
        one, sp = (np.load(tmp_path / d / stem, allow_pickle=False)["latent"] for d in ("one", "sp2"))
        assert np.abs(one).max() > 0.1
        np.testing.assert_allclose(sp, one, rtol=1e-5, atol=1e-5)


def test_validation_writes_the_ema_into_the_net_and_the_masters_back():
    """Bucket.write_params: whole parameters (one shard), the local segments of ZeRO-3, and whole
    parameters gathered from two ranks' segments (ZeRO-1/2), each equal to the EMA it was given."""
    from mindspore import Parameter, Tensor

    from vgen.parallel.zero import local_segment
    from vgen.train.flat_params import Bucket

    rng = np.random.default_rng(0)
    full = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    ema = {k: v + 1.0 for k, v in full.items()}
    shapes = {k: v.shape for k, v in full.items()}

    def bucket(shards, rank, sharded):
        params = [Parameter(Tensor(local_segment(v, shards, rank) if sharded else v), name=k) for k, v in full.items()]
        b = Bucket(0, list(full), params, [True, False], shapes=shapes, shards=shards, shard_rank=rank,
                   sharded=sharded, ema=True)
        b.ema.set_data(Tensor(np.concatenate([local_segment(ema[k], shards, rank) for k in full])))
        return b

    one = bucket(1, 0, False)
    one.write_params("ema")
    for (k, want), p in zip(ema.items(), one.params):
        np.testing.assert_array_equal(p.asnumpy(), want)
    one.write_params("master")
    for (k, want), p in zip(full.items(), one.params):
        np.testing.assert_array_equal(p.asnumpy(), want)
    z3 = bucket(2, 1, True)
    z3.write_params("ema")
    for (k, want), p in zip(ema.items(), z3.params):
        np.testing.assert_array_equal(p.asnumpy(), local_segment(want, 2, 1))
    r0, r1 = bucket(2, 0, False), bucket(2, 1, False)
    r1.write_params("ema", gather=lambda v: Tensor(np.stack([r0.ema.asnumpy(), v.asnumpy()])))
    for (k, want), p in zip(ema.items(), r1.params):
        np.testing.assert_array_equal(p.asnumpy(), want)


def test_teacache_runs_every_step_below_any_change_and_skips_at_the_published_threshold():
    """HunyuanVideo's TeaCache: with a threshold below any change it runs the blocks at every step and
    draws what the plain sampler draws; at 0.15 it skips steps (never the first or the last two),
    each skipped step reusing the last residual; the draw stays close to the plain one."""
    from vgen.sample.conditioning import conditioning
    from vgen.sample.sampler import Sampler

    family = tiny_family("hunyuan_tiny", "model.depth_double=1", "model.depth_single=1")
    settings = ["model=hunyuan_tiny", "model.depth_double=1", "model.depth_single=1", "sample.steps=10",
                "sample.num_frames=1", "sample.resolution=[32,32]"]
    draws, caches = {}, {}
    for thr in (0.0, 1e-9, 0.15):
        cfg = compose([*settings, f"sample.teacache={thr}"])
        sampler = Sampler(family, cfg.model, cfg.sample, jit=False)
        cond, uncond = conditioning(family, FakeEncoders(family), ["a"], sampler.geometry, cfg.sample)
        draws[thr], caches[thr] = sampler.latents(cond, uncond, [0]), sampler.model.run
    np.testing.assert_allclose(draws[1e-9], draws[0.0], rtol=1e-5, atol=1e-5)
    assert (caches[1e-9].computed, caches[1e-9].skipped) == (10, 0)
    cache = caches[0.15]
    assert cache.skipped > 0 and cache.computed + cache.skipped == 10
    rel = np.abs(draws[0.15] - draws[0.0]).mean() / np.abs(draws[0.0]).mean()
    assert 0 < rel < 0.05, rel
    with pytest.raises(ConfigError, match="no TeaCache"):
        cfg = compose(["model=stepvideo_tiny", "sample.teacache=0.1"])
        Sampler(tiny_family("stepvideo_tiny"), cfg.model, cfg.sample)
    with pytest.raises(ConfigError, match="parallel.sp=2"):
        from vgen.config.validate import validate

        validate(compose(["model=hunyuan_tiny", "sample.teacache=0.1", "parallel.workers=2", "parallel.sp=2"]))
