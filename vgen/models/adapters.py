"""Official-weights adapters of the shared frozen encoders (T5, CLIP, LLaMA, the SD VAE) and the
container helpers family adapters use. Pure Python: tools/convert_weights.py reads them, and
families list the ones they need in their FamilySpec. No MindSpore imports here."""
import re
from typing import Dict, Sequence, Tuple

from .family import WeightsAdapter, lazy, official_first


def take_container(keys: Sequence[str], container: str) -> Dict[str, str]:
    """{inner name: raw key} of the keys under `container.` (the dict `ckpt[container]`)."""
    prefix = container + "."
    return {k[len(prefix):]: k for k in keys if k.startswith(prefix)}


def containers(names: Tuple[str, ...], strict: bool = True):
    """unwrap: a checkpoint holding one of these top-level containers is a container and the
    weights are ckpt[load_key] (strict: the load key must be there) or the first one present;
    otherwise it is the bare state dict."""

    def unwrap(keys: Sequence[str], load_key: str) -> Dict[str, str]:
        present = [c for c in names if any(k.startswith(c + ".") for k in keys)]
        if not present:
            return {k: k for k in keys}
        if load_key in present:
            return take_container(keys, load_key)
        if strict:
            raise ValueError(f"the checkpoint holds {present} but not the requested --load-key {load_key!r}")
        return take_container(keys, present[0])

    return unwrap


def keep_under(prefixes: Tuple[str, ...], keep: Tuple[str, ...] = ("",)):
    """unwrap: strip the first matching prefix (tried in order; "" = none), then keep only the
    names that start with one of `keep` (other parts of a bigger model are dropped)."""

    def unwrap(keys: Sequence[str], load_key: str) -> Dict[str, str]:
        for prefix in prefixes:
            found = {k[len(prefix):]: k for k in keys if k.startswith(prefix)}
            if found:
                return {n: raw for n, raw in found.items() if n.startswith(keep)}
        return {}

    return unwrap


# ---- T5 (transformers T5EncoderModel / T5ForConditionalGeneration) ----------------------------

T5 = WeightsAdapter(
    "t5", lazy("vgen.models.text.t5:build_encoder"),
    official_first("t5-v1_1-xxl", lazy("vgen.models.text.t5:config_names")),
    # the encoder and the shared embedding; a whole T5 also has decoder.* and lm_head (dropped)
    unwrap=keep_under(("",), keep=("shared.", "encoder.")),
    tied=("encoder.embed_tokens.weight",),  # the same tensor as shared.weight
    about="transformers T5 state dict (T5EncoderModel or a whole T5: encoder part kept; tied "
          "encoder.embed_tokens.weight dropped)")

# ---- CLIP text tower (transformers CLIPTextModel or a whole CLIPModel) -----------------------

CLIP_TEXT = WeightsAdapter(
    "clip_text", lazy("vgen.models.text.clip:build_encoder"),
    official_first("clip-vit-large-patch14", lazy("vgen.models.text.clip:config_names")),
    unwrap=keep_under(("",), keep=("text_model.",)),
    tied=("text_model.embeddings.position_ids",),  # a buffer in older exports; recomputed
    about="transformers CLIPTextModel / CLIPModel (text_model.* kept, vision tower and projections dropped)")

# ---- LLaMA decoder (transformers LlamaModel / LlamaForCausalLM / LLaVA) -----------------------

LLAMA = WeightsAdapter(
    "llama", lazy("vgen.models.text.llama:build_encoder"),
    official_first("llava-llama-3-8b", lazy("vgen.models.text.llama:config_names")),
    unwrap=keep_under(("model.language_model.", "language_model.model.", "model.", ""),
                      keep=("embed_tokens.", "layers.", "norm.")),
    about="transformers LlamaModel / LlamaForCausalLM / LLaVA (decoder kept; lm_head, vision tower, "
          "projector dropped)")


# ---- the SD image VAE (diffusers AutoencoderKL; original LDM / SD checkpoints) ----------------

_LDM_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_OLD_DIFFUSERS_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def ldm_vae_name(name: str, levels: int = 4) -> str:
    """An original (LDM / CompVis) AutoencoderKL name -> diffusers'. Decoder levels are numbered
    the other way round in diffusers (up.0 is the last up block)."""
    m = re.match(r"(encoder|decoder)\.(down|up)\.(\d+)\.(block|downsample|upsample)\.(.*)", name)
    if m:
        side, kind, level, part, rest = m.groups()
        level = int(level) if kind == "down" else levels - 1 - int(level)
        stage = f"{side}.{kind}_blocks.{level}"
        if part == "block":
            j, tail = rest.split(".", 1)
            return f"{stage}.resnets.{j}.{tail.replace('nin_shortcut', 'conv_shortcut')}"
        return f"{stage}.{kind}samplers.0.{rest}"
    m = re.match(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(\w+)\.(weight|bias)$", name)
    if m:
        side, part, layer, kind = m.groups()
        if part == "attn_1":
            return f"{side}.mid_block.attentions.0.{_LDM_ATTN[layer]}.{kind}"
        return f"{side}.mid_block.resnets.{int(part[-1]) - 1}.{layer.replace('nin_shortcut', 'conv_shortcut')}.{kind}"
    return re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", name)


def sd_vae_name(name: str) -> str:
    """Any of the three SD VAE layouts -> current diffusers names."""
    if re.match(r"(encoder|decoder)\.(down|up|mid|norm_out)\.", name):
        return ldm_vae_name(name)
    m = re.match(r"(.*\.attentions\.0\.)(query|key|value|proj_attn)\.(weight|bias)$", name)
    if m:
        return f"{m.group(1)}{_OLD_DIFFUSERS_ATTN[m.group(2)]}.{m.group(3)}"
    return name


def linear_from_conv1x1(name: str, array, shape):
    """LDM stores the mid-block attention projections as 1x1 convs [C, C, 1, 1]; ours are Linears."""
    if array.ndim == len(shape) + 2 and array.shape[2:] == (1, 1):
        return array.reshape(shape)
    return array


SD_VAE = WeightsAdapter(
    "sd_vae", lazy("vgen.models.vae.sd_vae:build_vae"),
    official_first("sd-vae-ft-ema", lazy("vgen.models.vae.sd_vae:preset_names")),
    # a whole SD checkpoint keeps its VAE under first_stage_model.; a bare VAE ckpt may carry its
    # training loss (loss.*) and EMA bookkeeping, which are dropped
    unwrap=keep_under(("state_dict.first_stage_model.", "first_stage_model.", "state_dict.", ""),
                      keep=("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")),
    rename=sd_vae_name, reshape=linear_from_conv1x1,
    about="diffusers AutoencoderKL (current or query/key/value names), or the original LDM / SD "
          "checkpoint (first_stage_model.*; mid attention 1x1 convs become Linears)")


def model_presets(schema_name: str):
    """{name: model config} of the conf/model/*.yaml files built on this schema (vgen.conf)."""
    from importlib import resources

    from omegaconf import OmegaConf

    out = {}
    for f in sorted(resources.files("vgen.conf").joinpath("model").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".yaml"):
            cfg = OmegaConf.create(f.read_text())
            if schema_name in (cfg.get("defaults") or []):
                out[f.name[:-len(".yaml")]] = cfg
    return out


def from_schema(schema, schema_name: str, build: str, default: str):
    """(build, presets) of a family adapter: build(preset) is the family's denoiser through its own
    build function, at the schema's defaults (the official full size) for `default`, or as a
    conf/model/<preset>.yaml of this schema sets it (e.g. the _tiny configs)."""

    def make(preset: str):
        from omegaconf import OmegaConf

        from .family import resolve

        cfg = OmegaConf.merge(OmegaConf.structured(schema), {"name": preset})
        if preset != default:
            yaml = model_presets(schema_name)[preset]
            cfg = OmegaConf.merge(cfg, {k: v for k, v in yaml.items() if k != "defaults"})
        return resolve(build)(cfg).net

    return make, lambda: [default, *model_presets(schema_name)]


# ---- T2V-Turbo's reward models ----------------------------------------------------------------

HPS = WeightsAdapter(
    "hpsv2", lazy("vgen.models.rewards.hps:build_hps"),
    official_first("hpsv2.1", lazy("vgen.models.rewards.hps:config_names")),
    unwrap=keep_under(("state_dict.", "")),  # hpsv2 loads checkpoint["state_dict"]
    about="HPSv2.1 HPS_v2.1_compressed.pt (an open_clip ViT-H-14 CLIP state dict under 'state_dict'; "
          "T2V-Turbo's image reward, distill.image_reward)")

IV2 = WeightsAdapter(
    "internvideo2", lazy("vgen.models.rewards.internvideo2:build_internvideo2"),
    official_first("internvideo2-s2", lazy("vgen.models.rewards.internvideo2:config_names")),
    unwrap=lazy("vgen.models.rewards.internvideo2:checkpoint_names"),
    rename=lazy("vgen.models.rewards.internvideo2:checkpoint_rename"),
    reshape=lazy("vgen.models.rewards.internvideo2:checkpoint_reshape"),
    about="InternVideo2-stage2_1b-224p-f4.pt (its 'module' dict: the video tower, BERT as text_encoder.bert.*, the "
          "projections; the 4-frame pos_embed interpolated to the model's frames; heads the score never runs dropped; "
          "T2V-Turbo's video reward, distill.video_reward)")
