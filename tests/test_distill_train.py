"""A consistency distillation stage under the trainer (distill.enabled; vgen/train/distill.py): the
teacher's step is the base's (an independently built net without adapters), the target's
prediction is that of a net holding the EMA weights, the net gets its master weights back after,
and a stage trains and resumes exactly. (The loss terms against their formulas: test_consistency.py.)"""
import numpy as np
import pytest

from conftest import TINY_MODEL, compose, read_metrics

STUDENT = ["model=vc2_tiny", "model.input_size=[2,8,8]", "model.channel_mult=[1,2]", "model.attention_resolutions=[1]",
           "model.time_cond_proj_dim=16", "model.lora.rank=4", "model.lora.style=lora_diffusion"]
BASE = [*TINY_MODEL[2:], *STUDENT, "data=synthetic", "data.num_samples=8", "data.text_dropout=0", "schedule.lr=1e-3",
        "schedule.warmup_steps=0", "schedule.ckpt_every=2", "schedule.batch_size=2", "jit=false", "distill.enabled=true"]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """'Pretrained' base and adapters whose zero-initialised weights are drawn too (a zero output
    conv would make every eps 0 and the loss vanish)."""
    from distributed import drawn_pretrained

    folder = tmp_path_factory.mktemp("distill_weights")
    adapters = folder / "adapters.safetensors"
    base = drawn_pretrained(BASE, folder / "base.safetensors", adapters=adapters)
    return [f"model.pretrained={base}", f"model.lora.pretrained={adapters}"]


def net_with(overrides, arrays):
    """A freshly built family net (with or without adapters) holding `arrays` by name."""
    import mindspore as ms
    from mindspore import Tensor

    from vgen.models.layers.init import materialize, named_params
    from vgen.models.lora import adapt_family
    from vgen.models.registry import build_family

    cfg = compose(overrides)
    family = build_family(cfg.model)
    if cfg.model.lora.rank > 0:
        adapt_family(family, cfg.model.lora, seed=0)
    materialize(family.net, 0)
    for name, p in named_params(family.net):
        p.set_data(Tensor(arrays[name]).astype(ms.float32))
    family.net.set_train(True)
    return family


def test_teacher_is_the_base_and_target_the_ema_weights(tmp_path, drawn):
    from mindspore import Tensor
    from safetensors.numpy import load_file

    from vgen.models.layers.init import named_params
    from vgen.train.distill import distillation_objective
    from vgen.train.trainer import Trainer

    overrides = [*BASE, *drawn, "distill.target=ema", "schedule.ema_decay=0.95"]
    trainer = Trainer(compose(overrides), tmp_path).setup()
    rng = np.random.default_rng(0)
    for b in trainer.buckets:  # an EMA apart from the weights, as after some steps
        b.ema.set_data(Tensor(b.master.asnumpy() + 0.05 * rng.standard_normal(b.local_size).astype(np.float32)))
    before = {n: q.asnumpy() for n, q in named_params(trainer.family.net)}
    inputs = trainer.data.inputs(trainer.data.batches.build(0).micro[0])
    out = trainer.distillation(dict(inputs))
    after = {n: q.asnumpy() for n, q in named_params(trainer.family.net)}
    assert all(np.array_equal(before[n], after[n]) for n in before)  # the masters are back

    base = load_file(drawn[0].split("=", 1)[1])
    teacher = net_with([o for o in overrides if not o.startswith("model.lora")], base)  # no adapters at all
    objective = distillation_objective(teacher, compose(overrides))
    cell = objective.teacher_step(teacher.net, teacher.unguided_denoise, ("text_emb", "fps"))
    np.testing.assert_allclose(out["x_prev"].asnumpy(), cell(inputs).asnumpy(), rtol=1e-5, atol=1e-6)

    ema = {n: a for b in trainer.buckets for n, a in b.full_arrays("ema").items()}
    target = net_with(overrides, {**before, **ema})
    want = objective.target_cell(target.net, target.denoise)({**inputs, "x_prev": out["x_prev"]}).asnumpy()
    np.testing.assert_allclose(out["target"].asnumpy(), want, rtol=1e-5, atol=1e-6)
    online = objective.target_cell(trainer.family.net, trainer.family.denoise)({**inputs, "x_prev": out["x_prev"]})
    assert np.abs(online.asnumpy() - want).max() > 1e-4  # the EMA weights made a difference


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    from tiny_tokenizers import write_clip_tokenizer
    from vgen.data.synthetic import CAPTION_WORDS

    return str(write_clip_tokenizer(tmp_path_factory.mktemp("hps_tok") / "tokenizer.json", CAPTION_WORDS))


def reward_term(overrides, run_dir):
    """(trainer, micro-batch, loss inputs, the loss with the rewards minus the loss without, the
    student's prediction f(x_s, s)) at the first step of a distillation run with rewards."""
    from vgen.objectives.consistency import ConsistencyLoss, _at
    from vgen.train.trainer import Trainer

    trainer = Trainer(compose(overrides), run_dir).setup()
    family, obj = trainer.family, trainer.family.objective
    micro = trainer.data.batches.build(0).micro[0]
    inputs = trainer._inputs(micro)
    plain = ConsistencyLoss(family.net, obj.alphas_cumprod, family.denoise, obj.huber_c)
    term = family.make_loss_cell()(inputs).asnumpy() - plain(inputs).asnumpy()
    x0, s = inputs["latent"], inputs["t_start"]
    x_s = _at(plain.sqrt_a, s, 5) * x0 + _at(plain.sqrt_1ma, s, 5) * inputs["noise"]
    pred = plain.consistency(x_s, s, inputs, inputs["c_skip_start"], inputs["c_out_start"]).asnumpy()
    return trainer, micro, inputs, term, pred


def test_image_reward_term_is_minus_the_scaled_mean_hps_score(tmp_path, drawn, clip_tokenizer):
    """The loss with distill.image_reward minus the loss without it is -scale * the mean HPS score of
    the chosen frames of the chosen sample of f(x_s, s), decoded by the VAE (built on its own here);
    its gradient reaches the adapters through the decoder."""
    import mindspore as ms
    from mindspore import Tensor

    from vgen.models.encoders import build_vae
    from vgen.models.layers.init import named_params
    from vgen.models.rewards.hps import ImageTextScore

    overrides = [*BASE, *drawn, "distill.image_reward.model=hpsv2.1-tiny", f"distill.image_reward.tokenizer={clip_tokenizer}",
                 "distill.image_reward.frames=2", "distill.image_reward.scale=3.0"]
    trainer, micro, inputs, term, pred = reward_term(overrides, tmp_path)
    family, obj = trainer.family, trainer.family.objective
    samples, frames = (inputs[f"image_reward_{k}"].asnumpy() for k in ("samples", "frames"))
    assert len(samples) == 1 and len(frames) == 2 and len(set(frames)) == 2 and frames.max() < 2
    again = trainer.data.batches.build(0).micro[0].batch  # the same draws for the same step
    assert np.array_equal(again["image_reward_frames"], frames) and np.array_equal(again["image_reward_samples"], samples)
    spec = family.latent
    z = pred[samples][:, :, frames] / spec.scale + spec.shift
    video = build_vae(compose(overrides).model.vae, 0).decode_video(Tensor(z.astype(np.float32))).asnumpy()
    images = video.transpose(0, 2, 1, 3, 4).reshape(-1, video.shape[1], *video.shape[3:])
    reward = obj.rewards[0]
    text = reward.text_features([micro.batch["caption"][i] for i in samples for _ in frames])
    score = ImageTextScore(reward.score.clip)(Tensor(images), Tensor(text), inputs["image_reward_rows"],
                                              inputs["image_reward_cols"]).asnumpy()
    np.testing.assert_allclose(term, -3.0 * score.mean(), rtol=1e-4, atol=1e-6)

    obj.distill_weight = 0.0  # the reward term alone: its gradient reaches the adapters
    reward_only = family.make_loss_cell()
    params = [p for _, p in named_params(family.net) if p.requires_grad]
    grads = ms.grad(lambda b: reward_only(b).mean(), grad_position=None, weights=params)(inputs)
    assert sum(float(np.abs(g.asnumpy()).sum()) for g in grads) > 0


def test_each_rank_computes_the_terms_it_is_given(clip_tokenizer):
    """The official split: the consistency term on distill.ranks, each reward on its own ranks
    (every rank when a list is empty); the gradients are then averaged over all ranks."""
    from vgen.models.registry import build_family
    from vgen.train.distill import distillation_objective

    reward = ["distill.image_reward.model=hpsv2.1-tiny", f"distill.image_reward.tokenizer={clip_tokenizer}"]
    split = compose([*BASE, *reward, "parallel.workers=2", "distill.ranks=[0]", "distill.image_reward.ranks=[1]"])
    everywhere = compose([*BASE, *reward, "parallel.workers=2"])
    for cfg, want in ((split, {0: (1.0, 0), 1: (0.0, 1)}), (everywhere, {0: (1.0, 1), 1: (1.0, 1)})):
        for rank, (weight, rewards) in want.items():
            obj = distillation_objective(build_family(cfg.model), cfg, rank)
            assert (obj.distill_weight, len(obj.rewards)) == (weight, rewards)
            assert ("image_reward_text" in obj.fields) == bool(rewards) and ("reward" in obj.streams) == bool(rewards)


@pytest.fixture(scope="module")
def bert_vocab(tmp_path_factory):
    from vgen.data.synthetic import CAPTION_WORDS

    folder = tmp_path_factory.mktemp("iv2_vocab")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTION_WORDS]) + "\n")
    return str(folder)


def test_video_reward_term_scores_strided_frames_of_every_sample(tmp_path, bert_vocab):
    """distill.video_reward: -scale * the mean InternVideo2 score of every sample's clip of `frames`
    frames at stride t // frames from the drawn start, decoded by the VAE, with the drawn crop."""
    from mindspore import Tensor

    from vgen.models.encoders import build_vae
    from vgen.models.rewards.internvideo2 import VideoTextScore

    overrides = [*BASE, "model.input_size=[4,8,8]", "distill.video_reward.model=internvideo2-s2-tiny",
                 f"distill.video_reward.tokenizer={bert_vocab}", "distill.video_reward.frames=2",
                 "distill.video_reward.scale=2.0"]
    trainer, micro, inputs, term, pred = reward_term(overrides, tmp_path)
    family, obj = trainer.family, trainer.family.objective
    samples, frames = (inputs[f"video_reward_{k}"].asnumpy() for k in ("samples", "frames"))
    assert list(samples) == [0, 1] and len(frames) == 2 and frames[1] - frames[0] == 2 and frames[0] in (0, 1)
    z = pred[:, :, frames] / family.latent.scale + family.latent.shift
    video = build_vae(compose(overrides).model.vae, 0).decode_video(Tensor(z.astype(np.float32))).asnumpy()
    reward = obj.rewards[0]
    text = reward.text_features(list(micro.batch["caption"]))
    score = VideoTextScore(reward.score.model)(Tensor(video.transpose(0, 2, 1, 3, 4)), Tensor(text),
                                               inputs["video_reward_rows"], inputs["video_reward_cols"]).asnumpy()
    np.testing.assert_allclose(term, -2.0 * score.mean(), rtol=1e-4, atol=1e-6)


SYNTHETIC = {"kind": "synthetic", "skip_bad": False, "text_dropout": 0.0, "prefetch": 2, "num_samples": 8,
             "latent_size": None, "text_len": None, "min_text_len": 4, "shuffle": True}


@pytest.mark.slow
def test_three_stage_recipe_trains_and_resumes_exactly(tmp_path, clip_tokenizer, bert_vocab):
    """The MindSpore port's stages (experiment=vc2/t2v_turbo_stage{1,2,3}) scaled down to the tiny
    student on synthetic latents: each stage starts from the previous stage's adapters
    (model.lora.pretrained=<its run>) and trains; stage 3 (consistency + HPS + InternVideo2, EMA
    target) killed after one step and resumed equals it run through."""
    from omegaconf import OmegaConf
    from safetensors.numpy import load_file

    from distributed import drawn_pretrained
    from vgen.train.checkpoint import find_latest
    from vgen.train.trainer import Trainer

    size = ["model.input_size=[6,4,4]", "model.model_channels=16"]
    # LoRA dropout off: its masks come from MindSpore's own generator, which no checkpoint holds
    tiny = [*TINY_MODEL[2:], *STUDENT, *size, "model.lora.alpha=4", "model.lora.dropout=0", "precision=fp32",
            "jit=false", "schedule.epochs=null", "schedule.max_steps=2", "schedule.warmup_steps=0", "schedule.lr=1e-3",
            "schedule.ckpt_every=1", "schedule.grad_accum=1",
            f"distill.image_reward.tokenizer={clip_tokenizer}", "distill.image_reward.frames=2",
            f"distill.video_reward.tokenizer={bert_vocab}", "distill.video_reward.frames=2"]
    base = drawn_pretrained([*BASE, *size], tmp_path / "base.safetensors")

    def stage(k, run, *extra):
        cfg = compose([f"experiment=vc2/t2v_turbo_stage{k}", *tiny, f"model.pretrained={base}", *extra])
        cfg.data = OmegaConf.create(SYNTHETIC)
        if k > 1:
            assert cfg.distill.image_reward.model == "hpsv2.1"
            cfg.distill.image_reward.model = "hpsv2.1-tiny"
        if k > 2:
            cfg.distill.video_reward.model = "internvideo2-s2-tiny"
        Trainer(cfg, run).setup().run()
        return read_metrics(run)

    one = stage(1, tmp_path / "stage1", "schedule.max_steps=1")
    two = stage(2, tmp_path / "stage2", f"model.lora.pretrained={tmp_path / 'stage1'}", "schedule.max_steps=1")
    third = [f"model.lora.pretrained={tmp_path / 'stage2'}", "distill.target=ema", "schedule.ema_decay=0.95"]
    whole = stage(3, tmp_path / "stage3", *third)
    stage(3, tmp_path / "stage3_part", *third, "schedule.max_steps=1")
    part = stage(3, tmp_path / "stage3_part", *third)
    for metrics, steps in ((one, [1]), (two, [1]), (whole, [1, 2])):
        assert [m["step"] for m in metrics] == steps and all(np.isfinite(m["loss"]) for m in metrics)
    np.testing.assert_allclose([m["loss"] for m in part], [m["loss"] for m in whole], rtol=1e-6)
    a, b = (load_file(find_latest(tmp_path / r / "checkpoints") / "ema.safetensors") for r in ("stage3", "stage3_part"))
    assert sorted(a) == sorted(b)
    for n in a:
        np.testing.assert_allclose(a[n], b[n], rtol=1e-6, atol=1e-7)
    # stage 2 started from stage 1's adapters, not from zero-initialised up matrices
    first = load_file(find_latest(tmp_path / "stage1" / "checkpoints") / "model.safetensors")
    assert any("lora_up" in n and np.abs(v).sum() > 0 for n, v in first.items())
    for name, key in (("stage1", "s1"), ("stage2", "s2"), ("stage3", "s3")):
        print(key, "s/step", [round(m["step_time_s"], 2) for m in read_metrics(tmp_path / name)])
