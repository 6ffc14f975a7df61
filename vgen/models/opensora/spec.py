"""OpenSora 1.0 (STDiT) and 1.1 (STDiT2) as declared families: schemas, checks, blocks, SP plan,
random streams, frozen encoders (T5-XXL, the SD VAE) and official-weights adapters."""
from ...config.validate import check_heads, check_patches, check_sp_heads
from ..adapters import SD_VAE, T5, containers, from_schema
from ..family import FamilySpec, SPCore, SPPlan, TextEncoderSpec, VAESpec, WeightsAdapter, lazy
from .config import OPENSORA_MASK_RATIOS, STDiT2Config, STDiTConfig

TEXT_ENCODERS = {
    "t5-v1_1-xxl": TextEncoderSpec(lazy("vgen.models.text.t5:build_encoder", "t5-v1_1-xxl"), 4096),
    "t5-tiny": TextEncoderSpec(lazy("vgen.models.text.t5:build_encoder", "tiny"), 32),
}
VAES = {
    "sd-vae-ft-ema": VAESpec(lazy("vgen.models.vae.sd_vae:build_vae", "sd-vae-ft-ema"), 4, (1, 8, 8), 0.18215),
    "sd-vae-tiny": VAESpec(lazy("vgen.models.vae.sd_vae:build_vae", "tiny"), 4, (1, 8, 8), 0.18215),
}
# Open-Sora's find_model: a train.py checkpoint holds the weights under "ema"; a released .pth is
# the bare state dict; pos_embed / pos_embed_temporal are recomputed (dropped as derived buffers)
OPENSORA_UNWRAP = containers(("ema", "model", "module", "state_dict"), strict=False)


def check_stdit(m, cfg, err):
    check_heads(m, err)
    check_patches(m, err)
    check_sp_heads(m.num_heads, cfg.parallel.sp, err)


def check_stdit2(m, cfg, err):
    check_heads(m, err)
    if m.hidden_size % 12:
        err(f"model.hidden_size={m.hidden_size} must be divisible by 12 (size conditioning splits it in 3, "
            f"2D sin-cos positions in 4)")
    unknown = sorted(set(m.mask_ratios) - set(OPENSORA_MASK_RATIOS))
    if unknown:
        err(f"model.mask_ratios has unknown mask(s) {unknown}; known: {sorted(OPENSORA_MASK_RATIOS)}")
    if abs(sum(m.mask_ratios.values()) - 1.0) > 1e-6:
        err(f"model.mask_ratios sum to {sum(m.mask_ratios.values())}, not 1")


STDIT = FamilySpec(
    name="opensora_stdit", schema=STDiTConfig, schema_name="stdit_schema",
    build="vgen.models.opensora.family:build_stdit", check=check_stdit,
    blocks={"block": ("blocks",)},
    # frames are split across the SP group: spatial attention, cross-attention and MLPs are local;
    # temporal attention trades the frame split for a head split
    sp=SPPlan((SPCore("blocks.*.attn_temp.core"),)),
    text_encoders=TEXT_ENCODERS, vaes=VAES,
    weights=(WeightsAdapter("opensora_stdit", *from_schema(STDiTConfig, "stdit_schema",
                                                           "vgen.models.opensora.family:build_stdit", "STDiT-XL/2"),
                            unwrap=OPENSORA_UNWRAP,
                            about="Open-Sora 1.0 .pth / .safetensors (bare, or under \"ema\" from train.py)"),
             T5, SD_VAE),
)

STDIT2 = FamilySpec(
    name="opensora_stdit2", schema=STDiT2Config, schema_name="stdit2_schema",
    build="vgen.models.opensora.family:build_stdit2_family", check=check_stdit2,
    blocks={"block": ("blocks",)},
    sp=None, sp_missing="STDiT2 has no sequence-parallel plan yet (its temporal RoPE needs global frame positions)",
    streams={"frame_mask": 6},  # the 1.1 training frame masks
    text_encoders=TEXT_ENCODERS, vaes=VAES,
    weights=(WeightsAdapter("opensora_stdit2", *from_schema(STDiT2Config, "stdit2_schema",
                                                            "vgen.models.opensora.family:build_stdit2_family",
                                                            "STDiT2-XL/2"),
                            unwrap=OPENSORA_UNWRAP,
                            about="Open-Sora 1.1 model.safetensors / .pth (bare or under \"ema\")"),
             T5, SD_VAE),
)
