"""HunyuanVideo as declared families: the 13B DiT ("hunyuan", rectified flow) and its causal 3D
VAE trained as an autoencoder ("hunyuan_vae"): schemas, checks, blocks, SP plan, LoRA targets,
frozen encoders (LLaVA-LLaMA-3-8B, CLIP-L, the causal VAE) and official-weights adapters."""
from typing import Dict, Sequence

from ...config.validate import check_heads, check_sp_heads
from ..adapters import CLIP_TEXT, LLAMA, containers, take_container
from ..family import (POOLED, PROMPT_STATES, FamilySpec, SPCore, SPPlan, TextEncoderSpec, VAESpec, WeightsAdapter,
                      lazy, official_first)
from .config import HunyuanConfig, HunyuanVAEConfig

LLAMA_TOKENIZER, CLIP_TOKENIZER = "vgen.models.text.llama:LlamaTokenizer", "vgen.models.text.clip:CLIPTokenizer"
HUNYUAN_VAE_SCALE = 0.476986  # the official vae config's scaling_factor; no shift
TEXT_ENCODERS = {
    # text_encoder: hidden_states[-3] of the templated prompt, 256 states after the crop
    "llava-llama-3-8b": TextEncoderSpec(lazy("vgen.models.text.llama:build_encoder", "llava-llama-3-8b"), 4096,
                                        LLAMA_TOKENIZER, ("tokenizer.json",), PROMPT_STATES,
                                        official_crop=True),
    # 512 ids: room for a byte-level test tokenizer (256 bytes, Llama-3's special tokens, merges)
    "llama-tiny": TextEncoderSpec(lazy("vgen.models.text.llama:build_encoder", "tiny", vocab_size=512), 32,
                                  LLAMA_TOKENIZER, ("tokenizer.json",), PROMPT_STATES),
    # text_encoder_2: the pooled output (vector_in)
    "clip-vit-large-patch14": TextEncoderSpec(lazy("vgen.models.text.clip:build_encoder", "clip-vit-large-patch14"),
                                              768, CLIP_TOKENIZER, ("tokenizer.json",), POOLED, max_positions=77),
    "clip-tiny": TextEncoderSpec(lazy("vgen.models.text.clip:build_encoder", "tiny"), 32, CLIP_TOKENIZER,
                                 ("tokenizer.json",), POOLED,
                                 max_positions=16),
}
VAES = {
    "hunyuan-vae-884-16c": VAESpec(lazy("vgen.models.hunyuan.vae:video_vae", "884-16c"), 16, (4, 8, 8),
                                   HUNYUAN_VAE_SCALE),
    # the same code narrowed to seconds per clip on CPU, with the real latent channels (so the
    # tiny DiT keeps in_channels 16) and the tiny preset's tiles (32 px, 16 + 1 frames)
    "hunyuan-vae-tiny": VAESpec(lazy("vgen.models.hunyuan.vae:video_vae", "tiny", block_out_channels=(8, 16, 16, 16),
                                     norm_num_groups=4, latent_channels=16), 16, (4, 8, 8), HUNYUAN_VAE_SCALE),
}
# every Linear of the double / single blocks except the modulations (img_mod, txt_mod, modulation),
# the default selection of musubi-tuner's HunyuanVideo LoRA: 20 x 8 + 40 x 2 layers
LORA_TARGETS = ("double_blocks.*.img_attn_qkv", "double_blocks.*.img_attn_proj", "double_blocks.*.img_mlp.fc*",
                "double_blocks.*.txt_attn_qkv", "double_blocks.*.txt_attn_proj", "double_blocks.*.txt_mlp.fc*",
                "single_blocks.*.linear1", "single_blocks.*.linear2")


def unwrap_vae(keys: Sequence[str], load_key: str) -> Dict[str, str]:
    """hyvideo/vae/__init__.py load_vae: ckpt["state_dict"] if present; then, if any key starts with
    "vae.", only those keys, prefix removed."""
    mapping = {k: k for k in keys}
    if any(k.startswith("state_dict.") for k in keys):
        mapping = take_container(keys, "state_dict")
    if any(k.startswith("vae.") for k in mapping):
        mapping = {k[len("vae."):]: raw for k, raw in mapping.items() if k.startswith("vae.")}
    return mapping


def check_dit(m, cfg, err):
    if m.text_len != m.text_encoder.max_length:
        err(f"model.text_len={m.text_len} differs from model.text_encoder.max_length={m.text_encoder.max_length} "
            "(the DiT reads exactly the tokens the text encoder keeps after the template crop)")
    if m.text_encoder_2.max_length > 77:
        err(f"model.text_encoder_2.max_length={m.text_encoder_2.max_length}: CLIP has 77 positions")
    if check_heads(m, err) and sum(m.rope_dims) != m.hidden_size // m.num_heads:
        err(f"model.rope_dims={list(m.rope_dims)} must sum to the head dim {m.hidden_size // m.num_heads}")
    check_sp_heads(m.num_heads, cfg.parallel.sp, err)


def check_vae(m, cfg, err):
    if m.preset not in ("884-16c", "tiny"):
        err(f"model.preset={m.preset!r}: expected 884-16c or tiny")
    t, h, w = m.input_size
    if (t - 1) % 4 or h % 8 or w % 8:
        err(f"model.input_size={list(m.input_size)}: the causal VAE needs 4k+1 frames and sizes divisible by 8")
    for k in ("l1", "kl", "lpips", "gan", "gan_start_step"):
        if m.loss[k] < 0:
            err(f"model.loss.{k}={m.loss[k]}: must be >= 0")
    if m.loss.lpips > 0 and not m.loss.lpips_weights:
        err("model.loss.lpips > 0 needs model.loss.lpips_weights (converted LPIPS VGG16 weights, safetensors)")
    if cfg.data.kind == "video" and not cfg.data.get("buckets"):
        if (cfg.data.num_frames - 1) % 4 or any(x % 8 for x in cfg.data.resolution):
            err(f"data.num_frames={cfg.data.num_frames} / data.resolution={list(cfg.data.resolution)}: the causal "
                "VAE needs 4k+1 frames and sizes divisible by 8")
        if m.loss.gan > 0 and min(cfg.data.resolution) < 3 * 2 ** m.loss.disc_layers:
            err(f"data.resolution={list(cfg.data.resolution)} is too small for a {m.loss.disc_layers}-layer "
                f"discriminator (>= {3 * 2 ** m.loss.disc_layers} px per side)")
    if cfg.data.kind != "video":
        err(f"data={cfg.data.kind}: an autoencoder trains on clips: use data=video (or data=webvid)")


DIT = FamilySpec(
    name="hunyuan", schema=HunyuanConfig, schema_name="hunyuan_schema",
    build="vgen.models.hunyuan.family:build", check=check_dit,
    blocks={"double": ("double_blocks",), "single": ("single_blocks",)},
    # image tokens split across the SP group, text tokens whole on every rank; every joint attention
    # of the double and single blocks wrapped (the token refiner sees text only: local)
    sp=SPPlan((SPCore("double_blocks.*.core", "joint"), SPCore("single_blocks.*.core", "joint"))),
    lora_targets=LORA_TARGETS,
    text_encoders=TEXT_ENCODERS, vaes=VAES,
    weights=(WeightsAdapter("hunyuan", lazy("vgen.models.hunyuan.dit:build_hunyuan_dit"),
                            official_first("HYVideo-T/2-cfgdistill", lazy("vgen.models.hunyuan.dit:preset_names")),
                            unwrap=containers(("module", "ema")),
                            about="the DiT state dict, bare or under \"module\" (DeepSpeed *_model_states.pt, "
                                  "the official release) or \"ema\"; --load-key picks which"),
             LLAMA, CLIP_TEXT),
    teacache="vgen.models.hunyuan.teacache:TeaCache",
)

VAE = FamilySpec(
    name="hunyuan_vae", schema=HunyuanVAEConfig, schema_name="hunyuan_vae_schema",
    build="vgen.models.hunyuan.vae_family:build", check=check_vae,
    # recompute / ZeRO-3 units: the resolution stages of the encoder and the decoder
    blocks={"block": ("encoder.down_blocks", "decoder.up_blocks")},
    sp=None, sp_missing="autoencoder training has no sequence-parallel plan; use data parallel / ZeRO",
    weights=(WeightsAdapter("hunyuan_vae", lazy("vgen.models.hunyuan.vae:build_hunyuan_vae"),
                            official_first("884-16c", lazy("vgen.models.hunyuan.vae:preset_names")), unwrap=unwrap_vae,
                            about="the causal VAE, optionally under \"state_dict\"; \"vae.\"-prefixed keys only "
                                  "when present (hyvideo/vae load_vae)"),),
)
