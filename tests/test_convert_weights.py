"""tools/convert_weights.py for every family's adapters: the expected tables equal the official
layouts; official containers and name schemes (OpenSora's "ema" container, a whole T5 with its
tied embedding, the SD VAE's original LDM names and 1x1 attention convs, CLIP inside CLIPModel,
LLaMA inside LLaVA) convert into files that load strictly and hold the same values."""
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import layout_lines
from vgen.models.layers.init import declare_only, is_derived, materialize, named_params
from vgen.models.weights import load_safetensors, net_arrays



def declared(cw, target, preset):
    with declare_only():
        net = cw.adapter_of(target).build(preset)
    materialize(net, 3)
    return net


def random_state(net, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(p.shape).astype(np.float32) for n, p in named_params(net) if not is_derived(p)}


def converted(cw, target, preset, ckpt, tmp_path, **kw):
    src, out = tmp_path / "official.safetensors", tmp_path / "ours.safetensors"
    save_file(ckpt, str(src))
    summary = cw.convert(target, src, out, preset=preset, **kw)
    net = declared(cw, target, preset)
    load_safetensors(net, str(out), strict=True)
    return summary, net_arrays(net)


@pytest.mark.parametrize("target,layout", [
    ("opensora_stdit", "opensora_v1_0_stdit_xl2_16x256x256.txt"),
    ("opensora_stdit2", "opensora_v1_1_stdit2_xl2.txt"),
    ("sd_vae", "sd_vae_ft_ema_diffusers.txt"),
    ("hpsv2", "hpsv2_1_vit_h14.txt"),
])
def test_expected_tables_are_the_official_layouts(cw, target, layout):
    expected, derived = cw.model_layout(target)
    official = [ln for ln in layout_lines(layout) if ln.split(" ")[0] not in derived]
    assert [f"{n} {list(s)}" for n, s in expected] == official
    assert set(derived) <= {ln.split(" ")[0] for ln in layout_lines(layout)}  # recomputed, never loaded


def test_every_family_adapter_is_listed(cw):
    assert {"opensora_stdit", "opensora_stdit2", "hunyuan", "hunyuan_vae", "t5", "sd_vae", "clip_text",
            "llama"} <= set(cw.adapters())


def test_opensora_train_checkpoint_under_ema(cw, tmp_path):
    net = declared(cw, "opensora_stdit", "opensora_stdit_tiny")
    state = random_state(net, 1)
    ckpt = {f"ema.{n}": a for n, a in state.items()}
    ckpt.update({f"model.{n}": a + 1 for n, a in state.items()})  # the raw (non-EMA) weights: not taken
    ckpt["ema.pos_embed"] = np.zeros((1, 4, 8), np.float32)  # recomputed from the config: dropped
    summary, got = converted(cw, "opensora_stdit", "opensora_stdit_tiny", ckpt, tmp_path, load_key="ema")
    assert summary["dropped_derived"] == ["pos_embed"]
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_t5_drops_the_tied_embedding_and_the_decoder(cw, tmp_path):
    net = declared(cw, "t5", "tiny")
    state = random_state(net, 2)
    assert "shared.weight" in state and "encoder.embed_tokens.weight" not in state
    ckpt = dict(state)
    ckpt["encoder.embed_tokens.weight"] = state["shared.weight"]  # T5EncoderModel's tied copy
    ckpt["decoder.block.0.layer.0.SelfAttention.q.weight"] = np.ones((4, 4), np.float32)  # a whole T5
    ckpt["lm_head.weight"] = np.ones((4, 4), np.float32)
    summary, got = converted(cw, "t5", "tiny", ckpt, tmp_path)
    assert summary["dropped"] == 3
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def ldm_name(diffusers: str, levels: int) -> str:
    """diffusers AutoencoderKL name -> the original LDM one, written out independently of the tool."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    m = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", diffusers)
    if m:
        side, kind, level, j, rest = m.groups()
        level = int(level) if kind == "down" else levels - 1 - int(level)
        return f"{side}.{kind}.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(down|up)samplers\.0\.(.*)", diffusers)
    if m:
        side, kind, level, _, rest = m.groups()
        level = int(level) if kind == "down" else levels - 1 - int(level)
        return f"{side}.{kind}.{level}.{kind}sample.{rest}"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", diffusers)
    if m:
        return f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3)}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", diffusers)
    if m:
        return f"{m.group(1)}.mid.attn_1.{attn[m.group(2)]}.{m.group(3)}"
    return diffusers.replace("conv_norm_out", "norm_out")


def test_sd_vae_name_rules_on_known_names(cw):
    from vgen.models.adapters import sd_vae_name

    assert sd_vae_name("decoder.up.3.block.0.conv1.weight") == "decoder.up_blocks.0.resnets.0.conv1.weight"
    assert sd_vae_name("decoder.up.1.upsample.conv.weight") == "decoder.up_blocks.2.upsamplers.0.conv.weight"
    assert sd_vae_name("encoder.down.1.block.0.nin_shortcut.bias") == \
        "encoder.down_blocks.1.resnets.0.conv_shortcut.bias"
    assert sd_vae_name("encoder.mid.attn_1.proj_out.weight") == "encoder.mid_block.attentions.0.to_out.0.weight"
    assert sd_vae_name("decoder.mid.block_2.norm1.bias") == "decoder.mid_block.resnets.1.norm1.bias"
    assert sd_vae_name("encoder.norm_out.weight") == "encoder.conv_norm_out.weight"
    assert sd_vae_name("decoder.mid_block.attentions.0.query.weight") == \
        "decoder.mid_block.attentions.0.to_q.weight"  # the older diffusers names
    assert sd_vae_name("quant_conv.weight") == "quant_conv.weight"


def test_sd_vae_from_an_original_sd_checkpoint(cw, tmp_path):
    net = declared(cw, "sd_vae", "tiny")
    state = random_state(net, 4)
    ckpt = {}
    for name, value in state.items():
        official = ldm_name(name, levels=4)
        if ".attn_1." in official and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's 1x1 conv projections
        ckpt[f"first_stage_model.{official}"] = value
    ckpt["model.diffusion_model.input_blocks.0.0.weight"] = np.ones((2, 2), np.float32)  # the rest of SD
    ckpt["first_stage_model.loss.logvar"] = np.zeros((), np.float32)  # its training loss
    assert sum(k.startswith("first_stage_model.encoder.down.") for k in ckpt) > 0
    summary, got = converted(cw, "sd_vae", "tiny", ckpt, tmp_path)
    assert summary["tensors"] == len(state) and summary["dropped"] == 2
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_clip_text_tower_from_a_whole_clip_model(cw, tmp_path):
    net = declared(cw, "clip_text", "tiny")
    state = random_state(net, 5)
    ckpt = dict(state)
    ckpt["vision_model.embeddings.class_embedding"] = np.ones(4, np.float32)
    ckpt["text_projection.weight"] = np.ones((4, 4), np.float32)
    ckpt["logit_scale"] = np.ones((), np.float32)
    ckpt["text_model.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]  # older exports
    summary, got = converted(cw, "clip_text", "tiny", ckpt, tmp_path)
    assert summary["dropped"] == 4
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("prefix", ["model.", "model.language_model.", ""])
def test_llama_decoder_out_of_its_containers(cw, tmp_path, prefix):
    net = declared(cw, "llama", "tiny")
    state = random_state(net, 6)
    ckpt = {f"{prefix}{n}": a for n, a in state.items()}
    ckpt["lm_head.weight"] = np.ones((4, 4), np.float32)
    if prefix == "model.language_model.":  # LLaVA: a vision tower and a projector beside it
        ckpt["model.vision_tower.embeddings.weight"] = np.ones(4, np.float32)
        ckpt["model.multi_modal_projector.linear_1.weight"] = np.ones((4, 4), np.float32)
    _, got = converted(cw, "llama", "tiny", ckpt, tmp_path)
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_hunyuan_clip_out_of_its_bert_prefix(cw, tmp_path):
    """HunyuanCLIP's released BertModel: bert.* keys, a pooler and (older exports) position_ids."""
    net = declared(cw, "hunyuan_clip", "tiny")
    state = random_state(net, 7)
    ckpt = {f"bert.{n}": a for n, a in state.items()}
    ckpt["bert.pooler.dense.weight"] = np.ones((16, 16), np.float32)
    ckpt["bert.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
    summary, got = converted(cw, "hunyuan_clip", "tiny", ckpt, tmp_path)
    assert summary["dropped"] == 2
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("target", ["step_llm", "stepvideo"])
def test_step_video_state_dicts_convert_bare(cw, tmp_path, target):
    preset = "tiny"
    net = declared(cw, target, preset)
    state = random_state(net, 8)
    _, got = converted(cw, target, preset, dict(state), tmp_path)
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_videocrafter2_ckpt_holds_the_unet_and_the_text_tower(cw, tmp_path):
    """model.ckpt as Lightning saves it: state_dict.model.diffusion_model.*, .cond_stage_model.model.*
    (open_clip's CLIP without its visual tower), .first_stage_model.*: each converts out of it."""
    unet = random_state(declared(cw, "vc2", "vc2_tiny"), 8)
    text = random_state(declared(cw, "open_clip_text", "tiny"), 9)
    ckpt = {**{f"state_dict.model.diffusion_model.{n}": a for n, a in unet.items()},
            **{f"state_dict.cond_stage_model.model.{n}": a for n, a in text.items()},
            "state_dict.first_stage_model.encoder.conv_in.weight": np.ones((4, 3, 3, 3), np.float32),
            "state_dict.scale_arr": np.ones(1000, np.float32)}
    for target, preset, state in (("vc2", "vc2_tiny", unet), ("open_clip_text", "tiny", text)):
        summary, got = converted(cw, target, preset, dict(ckpt), tmp_path)
        assert summary["tensors"] == len(state), target
        for name, value in state.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{target} {name}")


def test_hps_reward_out_of_its_state_dict_container(cw, tmp_path):
    """HPS_v2.1_compressed.pt: the whole open_clip CLIP (both towers) under 'state_dict'."""
    state = random_state(declared(cw, "hpsv2", "hpsv2.1-tiny"), 10)
    summary, got = converted(cw, "hpsv2", "hpsv2.1-tiny", {f"state_dict.{n}": a for n, a in state.items()}, tmp_path)
    assert summary["tensors"] == len(state) and any(n.startswith("visual.") for n in state)
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_internvideo2_out_of_its_module_dict(cw, tmp_path):
    """InternVideo2-stage2_1b-224p-f4.pt as setup_internvideo2 reads it: torch.load(...)["module"] with
    the video tower, BERT under text_encoder.bert., the projections, a 4-frame pos_embed, and heads
    the score never runs (dropped)."""
    from vgen.models.rewards.internvideo2 import checkpoint_reshape

    state = random_state(declared(cw, "internvideo2", "internvideo2-s2-tiny"), 11)  # 8 frames
    pos8 = state["vision_encoder.pos_embed"]
    tokens = (pos8.shape[1] - 1) // 8
    pos4 = np.random.default_rng(12).standard_normal((1, 1 + 4 * tokens, pos8.shape[2])).astype(np.float32)
    ckpt = {f"module.{n.replace('text_encoder.', 'text_encoder.bert.', 1)}": a for n, a in state.items()}
    ckpt["module.vision_encoder.pos_embed"] = pos4
    unused = ["temp", "itm_head.weight", "text_encoder.cls.predictions.bias", "text_encoder.bert.embeddings.position_ids",
              "vision_encoder.img_pos_embed", "vision_encoder.clip_pos_embed", "vision_encoder.clip_decoder.0.head.weight",
              "vision_encoder.final_clip_decoder.norm.bias", "text_encoder.bert.encoder.layer.19.crossattention.self.key.weight"]
    ckpt.update({f"module.{n}": np.ones(3, np.float32) for n in unused})
    summary, got = converted(cw, "internvideo2", "internvideo2-s2-tiny", ckpt, tmp_path)
    assert summary["tensors"] == len(state)
    np.testing.assert_allclose(got["vision_encoder.pos_embed"],
                               checkpoint_reshape("vision_encoder.pos_embed", pos4, pos8.shape), rtol=1e-6)
    for name, value in state.items():
        if name != "vision_encoder.pos_embed":
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_modelscope_unet_and_its_sd2_text_encoder_from_the_diffusers_folder(cw, tmp_path):
    """unet/diffusion_pytorch_model.safetensors (bare diffusers names) and text_encoder/ (a
    CLIPTextModel: text_model.*, position_ids dropped) with preset clip-vit-h-14-sd2's code."""
    unet = random_state(declared(cw, "modelscope", "ms_tiny"), 10)
    _, got = converted(cw, "modelscope", "ms_tiny", dict(unet), tmp_path)
    for name, value in unet.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    with declare_only():
        text = cw.adapter_of("clip_text").build("clip-vit-h-14-sd2")
    assert [n for n, _ in named_params(text)][-2:] == ["text_model.final_layer_norm.weight",
                                                     "text_model.final_layer_norm.bias"]
    assert sum(int(np.prod(p.shape)) for _, p in named_params(text)) == 340_387_840
