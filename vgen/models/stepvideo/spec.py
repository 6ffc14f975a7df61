"""Step-Video-T2V as a declared family: schema, checks, blocks, SP plan, LoRA targets, its frozen text
encoders (Step-LLM, HunyuanCLIP), its frozen VAE v2 (17-frame chunks -> 3 latents, 16x16, 64
channels, latents not normalised) and the official-weights adapters."""
from ...config.validate import check_sp_heads
from ..adapters import keep_under
from ..family import (STATES, FamilySpec, SPCore, SPPlan, TextEncoderSpec, VAESpec, WeightsAdapter, lazy,
                      official_first)
from .config import StepVideoConfig

# the attention and FFN Linears of every block (ours: no LoRA recipe is published)
LORA_TARGETS = ("transformer_blocks.*.attn1.wqkv", "transformer_blocks.*.attn1.wo", "transformer_blocks.*.attn2.wq",
                "transformer_blocks.*.attn2.wkv", "transformer_blocks.*.attn2.wo",
                "transformer_blocks.*.ff.net.0.proj", "transformer_blocks.*.ff.net.2")
STEP_TOKENIZER = ("vgen.models.text.step_llm:StepTokenizer", ("step1_chat_tokenizer.model",))
BERT_TOKENIZER = ("vgen.models.text.bert:BertTokenizer", ("vocab.txt",))
TEXT_ENCODERS = {
    # text_encoder: Step-LLM's last hidden states [320, 6144] (no final norm), sqrt-ALiBi causal attention
    "step-llm": TextEncoderSpec(lazy("vgen.models.text.step_llm:build_encoder", "step-llm"), 6144, *STEP_TOKENIZER,
                                STATES),
    "step-llm-tiny": TextEncoderSpec(lazy("vgen.models.text.step_llm:build_encoder", "tiny", hidden_size=32,
                                          num_heads=4, num_groups=2), 32, *STEP_TOKENIZER, STATES),
    # text_encoder_2: HunyuanCLIP (BERT) last hidden states [77, 1024], the DiT's clip states
    "hunyuan-clip": TextEncoderSpec(lazy("vgen.models.text.bert:build_encoder", "hunyuan-clip"), 1024, *BERT_TOKENIZER,
                                    STATES, max_positions=512),
    "hunyuan-clip-tiny": TextEncoderSpec(lazy("vgen.models.text.bert:build_encoder", "tiny"), 16, *BERT_TOKENIZER,
                                         STATES, max_positions=16),
}
VAE_CHUNK = (17, 3)  # VAE v2 encodes 17-frame chunks to 3 latent frames
VAE_COMPRESSION = (8, 16, 16)
VAE_CHANNELS = 64
VAES = {
    # the released vae_v2.safetensors; latents as they come (scale 1, no shift)
    "stepvideo-vae-v2": VAESpec(lazy("vgen.models.stepvideo.vae:video_vae", "v2"), VAE_CHANNELS, VAE_COMPRESSION, 1.0),
    # the same code at 2.7M parameters with stepvideo_tiny's 8 latent channels (tests, CPU runs)
    "stepvideo-vae-tiny": VAESpec(lazy("vgen.models.stepvideo.vae:video_vae", "tiny"), 8, VAE_COMPRESSION, 1.0),
}


def vae_name(name: str) -> str:
    """The released VAE stores decoder.conv_out.{weight,bias}, which the model (and the official
    loader, init_from_ckpt) has as decoder.conv_out.conv.*."""
    prefix = "decoder.conv_out."
    if name.startswith(prefix) and not name.startswith(prefix + "conv."):
        return prefix + "conv." + name[len(prefix):]
    return name


def check(m, cfg, err):
    if sum(m.rope_split) != m.head_dim:
        err(f"model.rope_split={list(m.rope_split)} must sum to model.head_dim={m.head_dim}")
    if m.text_len != m.text_encoder.max_length:
        err(f"model.text_len={m.text_len} differs from model.text_encoder.max_length={m.text_encoder.max_length}")
    if m.clip_len != m.text_encoder_2.max_length:
        err(f"model.clip_len={m.clip_len} differs from model.text_encoder_2.max_length={m.text_encoder_2.max_length}")
    for i, axis in ((1, "H"), (2, "W")):
        if m.input_size[i] % m.patch_size:
            err(f"model.input_size[{i}]={m.input_size[i]} ({axis}) is not divisible by model.patch_size={m.patch_size}")
    check_sp_heads(m.num_heads, cfg.parallel.sp, err)


FAMILY = FamilySpec(
    name="stepvideo", schema=StepVideoConfig, schema_name="stepvideo_schema",
    build="vgen.models.stepvideo.family:build", check=check,
    blocks={"block": ("transformer_blocks",)},
    # image tokens split across the SP group; self-attention trades the split for a head split;
    # cross-attention reads the whole text on every rank (local)
    sp=SPPlan((SPCore("transformer_blocks.*.attn1.core"),)),
    lora_targets=LORA_TARGETS,
    text_encoders=TEXT_ENCODERS, vaes=VAES,
    weights=(WeightsAdapter("stepvideo", lazy("vgen.models.stepvideo.dit:build_stepvideo_dit"),
                            official_first("Step-Video-T2V", lazy("vgen.models.stepvideo.dit:preset_names")),
                            about="the StepVideoModel state dict (transformer/*.safetensors, bare names)"),
             WeightsAdapter("step_llm", lazy("vgen.models.text.step_llm:build_encoder"),
                            official_first("step-llm", lazy("vgen.models.text.step_llm:config_names")),
                            about="Step-LLM's Step1Model state dict (step_llm/*.safetensors, bare names)"),
             WeightsAdapter("hunyuan_clip", lazy("vgen.models.text.bert:build_encoder"),
                            official_first("hunyuan-clip", lazy("vgen.models.text.bert:config_names")),
                            unwrap=keep_under(("bert.", ""), keep=("embeddings.", "encoder.")),
                            tied=("embeddings.position_ids",),
                            about="HunyuanCLIP's BertModel (hunyuan_clip/clip_text_encoder; bert.* keys, the "
                                  "pooler dropped)"),
             WeightsAdapter("stepvideo_vae", lazy("vgen.models.stepvideo.vae:build_stepvideo_vae"),
                            official_first("v2", lazy("vgen.models.stepvideo.vae:preset_names")), rename=vae_name,
                            about="VAE v2 (vae/vae_v2.safetensors, bare names; decoder.conv_out.* -> "
                                  "decoder.conv_out.conv.*)")),
)
