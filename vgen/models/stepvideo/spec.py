"""Step-Video-T2V as a declared family: schema, checks, blocks, SP plan, LoRA targets and the
official-weights adapter. Its frozen encoders (Step-LLM, HunyuanCLIP, VAE v2) are declared as they
land; until then the family trains on cached or synthetic latents and text."""
from ...config.validate import check_sp_heads
from ..family import FamilySpec, SPCore, SPPlan, WeightsAdapter, lazy, official_first
from .config import StepVideoConfig

# the attention and FFN Linears of every block (ours: no LoRA recipe is published)
LORA_TARGETS = ("transformer_blocks.*.attn1.wqkv", "transformer_blocks.*.attn1.wo", "transformer_blocks.*.attn2.wq",
                "transformer_blocks.*.attn2.wkv", "transformer_blocks.*.attn2.wo",
                "transformer_blocks.*.ff.net.0.proj", "transformer_blocks.*.ff.net.2")
VAE_CHUNK = (17, 3)  # VAE v2 encodes 17-frame chunks to 3 latent frames
VAE_COMPRESSION = (8, 16, 16)
VAE_CHANNELS = 64


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
    weights=(WeightsAdapter("stepvideo", lazy("vgen.models.stepvideo.dit:build_stepvideo_dit"),
                            official_first("Step-Video-T2V", lazy("vgen.models.stepvideo.dit:preset_names")),
                            about="the StepVideoModel state dict (transformer/*.safetensors, bare names)"),),
)
