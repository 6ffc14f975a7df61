"""Step-Video-T2V: the DiT in the official layouts (released and with additional conditions), its
forward against a float64 numpy reference written from the official model's description, the
flow-matching objective in Step-Video's convention against its formulas and the official sampler,
and the family training end to end."""
import math
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import TINY_MODEL, compose, layout_lines, read_metrics
from vgen.models.layers.init import count_params, materialize, named_params
from vgen.models.stepvideo.dit import build_stepvideo_dit
from vgen.objectives.rectified_flow import RectifiedFlow, shift_sigma
from vgen.runtime import setup_device

setup_device("auto")


@pytest.mark.parametrize("preset,layout,total", [
    ("Step-Video-T2V", "stepvideo_t2v_dit.txt", 29_342_478_400),
    ("Step-Video-T2V-addcond", "stepvideo_t2v_dit_addcond.txt", 29_431_375_936),
])
def test_official_layouts_and_counts(preset, layout, total):
    net = build_stepvideo_dit(preset)  # declared only: no memory
    assert [f"{n} {list(p.shape)}" for n, p in named_params(net)] == layout_lines(layout)
    assert count_params(net) == (total, 0)


def test_family_config_is_the_official_model():
    from vgen.models.registry import build_family

    family = build_family(compose(["model=stepvideo"]).model)
    assert count_params(family.net) == (29_342_478_400, 0)
    assert family.latent.latent_shape(204, 544, 992) == (64, 36, 34, 62)
    assert family.text.length == 320 and family.text.pooled_length == 77 and family.text.pooled_dim == 1024
    tiny = build_family(compose(["model=stepvideo_tiny"]).model)
    collapse = lambda n: ".".join(p for p in n.split(".") if not p.isdigit())
    assert {collapse(n) for n, _ in named_params(tiny.net)} == {collapse(ln.split(" ")[0])
                                                              for ln in layout_lines("stepvideo_t2v_dit.txt")}


# ---- the forward against an independent reference -------------------------------------------------

def np_layer_norm(x, eps, w=None, b=None):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    y = (x - m) / np.sqrt(v + eps)
    return y if w is None else y * w + b


def np_rms(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1 + np.exp(-x))


def attend(q, k, v, key_mask=None):
    """q [B, Nq, H, d], k/v [B, Nk, H, d] (the official 'b s h d'); key_mask [B, Nk] bool."""
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        logits = np.where(key_mask[:, None, None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


def rope3d(x, grid, split, theta=1e4):
    """RoPE3D as the official RoPE1D per chunk: cat(freqs, freqs), rotate_half, positions from the
    cartesian product of (f, h, w). x [B, N, H, d]."""
    f, h, w = grid
    pos = np.array([(a, b, c) for a in range(f) for b in range(h) for c in range(w)])
    out, start = [], 0
    for axis, dim in enumerate(split):
        chunk = x[..., start:start + dim]
        inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
        freqs = pos[:, axis:axis + 1] * inv[None]
        emb = np.concatenate([freqs, freqs], -1)[None, :, None, :]
        rot = np.concatenate([-chunk[..., dim // 2:], chunk[..., :dim // 2]], -1)
        out.append(chunk * np.cos(emb) + rot * np.sin(emb))
        start += dim
    return np.concatenate(out, -1)


def reference_forward(P, x, t, text, text_mask, clip, heads, split):
    lin = lambda v, name, bias=True: v @ P[name + ".weight"].T + (P[name + ".bias"] if bias else 0)
    b, c, f, hh, ww = x.shape
    tokens = x.transpose(0, 2, 3, 4, 1).reshape(b, f * hh * ww, c)  # 'b f c h w' -> (f h w), 1x1 conv
    tokens = tokens @ P["pos_embed.proj.weight"][:, :, 0, 0].T + P["pos_embed.proj.bias"]
    d = tokens.shape[-1]
    half = 128
    args = (t * 1000.0)[:, None] * np.exp(-math.log(10000) * np.arange(half) / half)[None]
    sinusoid = np.concatenate([np.cos(args), np.sin(args)], -1)  # flip_sin_to_cos
    emb = lin(silu(lin(sinusoid, "adaln_single.emb.timestep_embedder.linear_1")),
              "adaln_single.emb.timestep_embedder.linear_2")
    t_mod = lin(silu(emb), "adaln_single.linear")
    cap = lin(gelu_tanh(lin(np_layer_norm(text, 1e-6), "caption_projection.linear_1")), "caption_projection.linear_2")
    ctx = np.concatenate([lin(clip, "clip_projection"), cap], 1)
    ctx_mask = np.concatenate([np.ones((b, clip.shape[1]), bool), text_mask.astype(bool)], 1)
    hd = d // heads
    for i in range(len([k for k in P if k.endswith(".scale_shift_table") and k.startswith("transformer_blocks")])):
        pre = f"transformer_blocks.{i}"
        mod = P[f"{pre}.scale_shift_table"][None] + t_mod.reshape(b, 6, d)
        sh1, sc1, g1, sh2, sc2, g2 = (mod[:, j:j + 1] for j in range(6))
        hs = np_layer_norm(tokens, 1e-5, P[f"{pre}.norm1.weight"], P[f"{pre}.norm1.bias"]) * (1 + sc1) + sh1
        qkv = lin(hs, f"{pre}.attn1.wqkv", False).reshape(b, -1, heads, 3 * hd)  # view(heads, 3 * hd)
        q, k, v = qkv[..., :hd], qkv[..., hd:2 * hd], qkv[..., 2 * hd:]
        q = rope3d(np_rms(q, P[f"{pre}.attn1.q_norm.weight"]), (f, hh, ww), split)
        k = rope3d(np_rms(k, P[f"{pre}.attn1.k_norm.weight"]), (f, hh, ww), split)
        tokens = tokens + g1 * lin(attend(q, k, v).reshape(b, -1, d), f"{pre}.attn1.wo", False)
        q = lin(tokens, f"{pre}.attn2.wq", False).reshape(b, -1, heads, hd)
        kv = lin(ctx, f"{pre}.attn2.wkv", False).reshape(b, -1, heads, 2 * hd)
        k, v = kv[..., :hd], kv[..., hd:]
        q, k = np_rms(q, P[f"{pre}.attn2.q_norm.weight"]), np_rms(k, P[f"{pre}.attn2.k_norm.weight"])
        tokens = tokens + lin(attend(q, k, v, ctx_mask).reshape(b, -1, d), f"{pre}.attn2.wo", False)
        hs = np_layer_norm(tokens, 1e-5, P[f"{pre}.norm2.weight"], P[f"{pre}.norm2.bias"]) * (1 + sc2) + sh2
        ff = lin(gelu_tanh(lin(hs, f"{pre}.ff.net.0.proj", False)), f"{pre}.ff.net.2", False)
        tokens = tokens + g2 * ff
    shift, scale = (P["scale_shift_table"][None] + emb[:, None])[:, 0:1], (P["scale_shift_table"][None] + emb[:, None])[:, 1:2]
    out = lin(np_layer_norm(tokens, 1e-6) * (1 + scale) + shift, "proj_out")
    return out.reshape(b, f, hh, ww, c).transpose(0, 4, 1, 2, 3)


def test_forward_matches_the_reference():
    net = build_stepvideo_dit("tiny")
    materialize(net, 5)
    rng = np.random.default_rng(0)
    P = {n: p.asnumpy().astype(np.float64) for n, p in named_params(net)}
    for n in P:  # non-trivial norms and tables (the init leaves some at 1 / 0)
        if n.endswith(("norm.weight", "norm1.weight", "norm2.weight", ".bias")):
            P[n] = P[n] + 0.1 * rng.standard_normal(P[n].shape)
    for n, p in named_params(net):
        p.set_data(Tensor(P[n].astype(np.float32)))
    b, c, f, h, w = 2, 8, 3, 4, 6
    x = rng.standard_normal((b, c, f, h, w))
    t = np.array([0.2, 0.9])
    text = rng.standard_normal((b, 16, 32))
    mask = (np.arange(16)[None] < np.array([[5], [16]])).astype(np.float32)
    text[0, 5:] = 0.0
    clip = rng.standard_normal((b, 8, 16))
    got = net(*(Tensor(a.astype(np.float32)) for a in (x, t, text, mask, clip))).asnumpy()
    want = reference_forward(P, x, t, text, mask, clip, heads=4, split=(8, 4, 4))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


# ---- the objective -----------------------------------------------------------------------------------

def step_flow():
    return RectifiedFlow(data_at_one=True, timestep_scale=1.0, sample_shift=13.0, cfg_scale=9.0)


def test_loss_in_steps_convention():
    class Echo(ms.nn.Cell):  # v = a x + b t: sees Step-Video's t = 1 - s
        def construct(self, x, t):
            return 0.5 * x + 2.0 * t.reshape((-1,) + (1,) * (x.ndim - 1))

    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((3, 4, 2, 2, 2)).astype(np.float32)
    eps = rng.standard_normal(x0.shape).astype(np.float32)
    s = np.array([0.1, 0.5, 0.95], np.float32)
    loss = step_flow().loss_cell(Echo())({"latent": Tensor(x0), "noise": Tensor(eps), "t": Tensor(s)}).asnumpy()
    sb = s[:, None, None, None, None]
    x_t = (1 - sb) * x0 + sb * eps  # = t x0 + (1 - t) eps with t = 1 - s
    want = ((0.5 * x_t + 2.0 * (1 - sb) - (x0 - eps)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_sampler_is_the_official_euler_schedule():
    """The official FlowMatchDiscreteScheduler(reverse=False): sigmas = 1 - shift(linspace(1, 0, N + 1));
    the model sees sigmas[i]; x += v (sigmas[i+1] - sigmas[i])."""
    steps, shift = 6, 13.0
    official = 1 - shift_sigma(np.linspace(1, 0, steps + 1), shift)
    seen = []

    def velocity(x, t):
        seen.append(float(t.asnumpy()[0]))
        return Tensor(np.full(x.shape, 1.0, np.float32))  # a constant velocity

    noise = np.zeros((1, 2), np.float32)
    out = step_flow().sample(velocity, Tensor(noise), steps)
    np.testing.assert_allclose(seen, official[:-1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out.asnumpy(), np.full((1, 2), official[-1] - official[0]), rtol=1e-5)


def test_sampling_settings_of_base_and_turbo():
    """Base: 50 steps, shift 13, CFG 9; Turbo (same DiT): 15 steps, shift 17, CFG 5."""
    for model, want in (("stepvideo", (50, 13.0, 9.0)), ("stepvideo_turbo", (15, 17.0, 5.0))):
        cfg = compose([f"model={model}"]).model
        flow = RectifiedFlow.from_config(cfg.objective)
        assert (flow.sampling_steps, flow.sample_shift, flow.cfg_scale) == want
        np.testing.assert_allclose(flow.sigmas(), shift_sigma(np.linspace(1, 0, want[0] + 1), want[1]))
        assert (cfg.depth, cfg.num_heads, cfg.in_channels) == (48, 48, 64)


# ---- training --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_trains_and_resumes_exactly(tmp_path):
    from vgen.train.trainer import Trainer

    base = [*TINY_MODEL[2:], "model=stepvideo_tiny", "data=synthetic", "data.num_samples=8", "schedule.batch_size=2",
            "schedule.ckpt_every=2", "schedule.lr=1e-3"]
    whole = tmp_path / "whole"
    Trainer(compose([*base, "schedule.max_steps=4"]), whole).setup().run()
    part = tmp_path / "part"
    Trainer(compose([*base, "schedule.max_steps=2"]), part).setup().run()
    Trainer(compose([*base, "schedule.max_steps=4"]), part).setup().run()
    want = [m["loss"] for m in read_metrics(whole)]
    got = [m["loss"] for m in read_metrics(part)]
    assert len(want) == 4 and all(np.isfinite(want))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.dist
def test_sequence_parallel_and_zero3_equal_one_process(tmp_path):
    """sp 2 (image tokens split, self-attention heads split), ZeRO-3, and LoRA under ZeRO-3 (the
    frozen base sharded too) at 2 workers, each against one process on the same global batch of 2.
    sp2 and ZeRO-3 also draw a validation video at the last step (the EMA written into the
    sequence-parallel / sharded net and the masters back): their weights still equal the reference's.
    Every run scores 3 held-out samples (8-10, after the 8 it trains on; ZeRO-3's two data-parallel
    ranks score 2 and 1 + a weight-0 repeat): the validation losses equal one process's."""
    from distributed import assert_same_run, assert_same_weights, run_scenarios
    from tiny_tokenizers import write_step_tokenizers
    from vgen.train.trainer import Trainer

    prompt = "a red circle moving left"
    write_step_tokenizers(tmp_path / "tok", [prompt])
    val = ["schedule.val_every=3", f'sample.prompts=["{prompt}"]', "sample.steps=2", "sample.num_frames=17",
           "sample.resolution=[48,80]", f"model.text_encoder.tokenizer={tmp_path / 'tok' / 'step'}",
           f"model.text_encoder_2.tokenizer={tmp_path / 'tok' / 'bert'}"]

    base = [*TINY_MODEL[2:], "model=stepvideo_tiny", "model.input_size=[3,3,5]", "data=synthetic",
            "data.num_samples=11", "schedule.max_steps=3", "schedule.ckpt_every=3", "schedule.ema_decay=0.9",
            "schedule.warmup_steps=0", "schedule.lr=1e-3", "data.holdout=3", "schedule.val_every=3"]
    lora = ["model.lora.rank=4", "model.lora.alpha=4"]
    ref, lora_ref = tmp_path / "single", tmp_path / "single_lora"
    Trainer(compose([*base, "schedule.batch_size=2"]), ref).setup().run()
    Trainer(compose([*base, *lora, "schedule.batch_size=2"]), lora_ref).setup().run()
    run_scenarios(tmp_path / "two", 2, [
        {"name": "sp2", "overrides": [*base, *val, "schedule.batch_size=2"], "sp": 2},  # 45 tokens: padded to 46, masked
        {"name": "zero3", "overrides": [*base, *val, "schedule.batch_size=1", "parallel.recompute=all"], "zero": 3},
        {"name": "lora_zero3", "overrides": [*base, *lora, "schedule.batch_size=1", "parallel.recompute=all"],
         "zero": 3},
    ])
    # LoRA's B starts at zero: Adam divides its first, tiny gradients by their own sqrt(v), so the
    # summation-order noise of a sharded reduction moves a few B entries by ~1e-3 of a step (lr 1e-3)
    for name, want, atol in (("sp2", ref, 1e-6), ("zero3", ref, 1e-6), ("lora_zero3", lora_ref, 1e-5)):
        assert_same_run(tmp_path / "two" / name, want, steps=range(1, 4))
        assert_same_weights(tmp_path / "two" / name, want, atol)
        got, ref_val = (read_metrics(run, "validation.jsonl")[-1] for run in (tmp_path / "two" / name, want))
        assert got["step"] == ref_val["step"] == 3 and np.isfinite(ref_val["val_loss"])
        np.testing.assert_allclose(got["val_loss"], ref_val["val_loss"], rtol=1e-5, err_msg=name)
    for name in ("sp2", "zero3"):
        assert [p.suffix for p in sorted((tmp_path / "two" / name / "samples" / "step_3").iterdir())] == [".json", ".mp4"]


# ---- text caches: Step-LLM states + HunyuanCLIP states ------------------------------------------------

@pytest.mark.slow
def test_text_cache_holds_both_encoders_states(tmp_path):
    """vgen-cache text for the tiny family: text_emb / mask from Step-LLM, text_pooled [77-like, dim]
    from the BERT, equal to the encoders run directly, and a manifest naming both."""
    import importlib.util

    import pandas as pd
    import sentencepiece as spm

    from conftest import REPO
    from vgen.cli import cache as cache_cli
    from vgen.data.manifest import read_manifest, text_folder
    from vgen.models.encoders import TextEncoders

    spec = importlib.util.spec_from_file_location("make_quickstart_data", REPO / "tools" / "make_quickstart_data.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    csv_path = Path(quickstart.build(str(tmp_path / "data"), num=3, seed=0, num_images=0))
    captions = list(pd.read_csv(csv_path)["caption"])
    words = sorted({w for c in captions for w in str(c).lower().replace(",", " ").replace(".", " ").split()})
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    (tmp_path / "step").mkdir()
    with open(tmp_path / "step" / "step1_chat_tokenizer.model", "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(captions * 8), model_writer=f, vocab_size=40,
                                       model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)
    cache_dir = tmp_path / "cache"
    over = ["model=stepvideo_tiny", "data=video", f"data.csv_path={csv_path}", f"data.cache_dir={cache_dir}",
            f"model.text_encoder.tokenizer={tmp_path / 'step'}", f"model.text_encoder_2.tokenizer={tmp_path / 'bert'}",
            "progress=false"]
    cache_cli.run("text", over)
    manifest = read_manifest(text_folder(cache_dir))
    assert manifest["encoder"] == "step-llm-tiny" and manifest["pooled"]["encoder"] == "hunyuan-clip-tiny"
    direct = TextEncoders.from_model_config(compose(over).model)(captions[:1])
    name = str(Path(pd.read_csv(csv_path)["video"][0]).with_suffix(""))  # videos/clip_00000
    with np.load(text_folder(cache_dir) / f"{name}.npz", allow_pickle=False) as z:
        assert z["text_emb"].shape == (16, 32) and z["text_pooled"].shape == (8, 16)
        np.testing.assert_allclose(z["text_emb"], direct["text_emb"][0], atol=1e-5)
        np.testing.assert_array_equal(z["mask"], direct["text_mask"][0])
        np.testing.assert_allclose(z["text_pooled"], direct["text_pooled"][0], atol=1e-5)


def test_split_marks_the_padding_of_lengths_that_do_not_divide():
    from vgen.parallel.comm import Group
    from vgen.parallel.sequence import SequenceSplit

    x = Tensor(np.arange(10, dtype=np.float32).reshape(1, 5, 2))
    for rank, valid in ((0, [1, 1, 1]), (1, [1, 1, 0])):  # 5 tokens over 2 ranks: 3 + 2 and a pad
        split = SequenceSplit(Group("sp", (0, 1), rank), axis=1)
        np.testing.assert_array_equal(split.valid(5, ms.float32).asnumpy(), valid)
        want = np.concatenate([x.asnumpy(), np.zeros((1, 1, 2), np.float32)], 1)[:, 3 * rank:3 * rank + 3]
        np.testing.assert_array_equal(split(x).asnumpy(), want)
    assert SequenceSplit(Group("sp", (0, 1), 1), axis=1).valid(6, ms.float32).asnumpy().tolist() == [1, 1, 1]


def test_zero3_shards_a_frozen_lora_base():
    """Under LoRA the base is frozen, and ZeRO-3 still shards its layers (a 30B base is never whole)."""
    from vgen.models.lora import apply_lora
    from vgen.models.registry import build_family
    from vgen.parallel.zero import shardable_names

    family = build_family(compose(["model=stepvideo_tiny"]).model)  # declared only
    apply_lora(family.net, 4, 4.0, list(family.spec.lora_targets))
    names = shardable_names(family.net)
    assert {"transformer_blocks.0.attn1.wqkv.weight", "transformer_blocks.0.attn1.wqkv.lora_up.weight",
            "transformer_blocks.1.ff.net.2.weight"} <= names
    assert not any(n.endswith("scale_shift_table") for n in names)  # read directly by the block: whole
