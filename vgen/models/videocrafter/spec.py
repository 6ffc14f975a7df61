"""VideoCrafter2 (T2V-Turbo's VC2 teacher; with time_cond_proj its student) as a declared family:
schema, checks, blocks, LoRA targets, its frozen text encoder (OpenCLIP ViT-H/14, penultimate
layer, 77 tokens) and VAE (the SD AutoencoderKL, frame by frame, latents x 0.18215)."""
from ...config.validate import check_unet
from ..adapters import HPS, IV2, SD_VAE, from_schema, keep_under
from ..family import STATES, FamilySpec, TextEncoderSpec, WeightsAdapter, lazy, official_first
from ..opensora.spec import VAES as SD_VAES
from .config import VC2Config

OPEN_CLIP_TOKENIZER = ("vgen.models.text.open_clip:OpenCLIPTokenizer", ("tokenizer.json",))
TEXT_ENCODERS = {
    "open-clip-vit-h-14": TextEncoderSpec(lazy("vgen.models.text.open_clip:build_encoder", "open-clip-vit-h-14"), 1024,
                                          *OPEN_CLIP_TOKENIZER, STATES, max_positions=77),
    "open-clip-tiny": TextEncoderSpec(lazy("vgen.models.text.open_clip:build_encoder", "tiny"), 32,
                                      *OPEN_CLIP_TOKENIZER, STATES, max_positions=16),
}
# every Linear, Conv2d and Conv3d, as T2V-Turbo adapts the UNet (its unet_lora.pt: 575 layers;
# init_attn's 1x1 Conv1d projections are not adapted, there as here)
LORA_TARGETS = ("*",)


def check(m, cfg, err):
    levels = {"model_channels": m.model_channels,
              **{f"channel_mult[{i}]": m.model_channels * mult for i, mult in enumerate(m.channel_mult)}}
    check_unet(m, err, levels, "norm_groups", "head_channels", len(m.channel_mult) - 1)


FAMILY = FamilySpec(
    name="videocrafter2", schema=VC2Config, schema_name="vc2_schema",
    build="vgen.models.videocrafter.family:build", check=check,
    # the UNet's blocks in forward order: the first conv, init_attn, the encoder, the middle
    # block's layers, the decoder (units of recompute and ZeRO-3)
    blocks={"block": ("input_blocks", "init_attn", "middle_block", "output_blocks")},
    sp=None, sp_missing="the VideoCrafter2 UNet has no sequence-parallel plan (its convolutions see whole frames)",
    lora_targets=LORA_TARGETS,
    text_encoders=TEXT_ENCODERS, vaes=SD_VAES,
    # VideoCrafter2's model.ckpt (a Lightning checkpoint: state_dict.*) holds the UNet, the VAE and
    # the text tower: each converts out of it (the VAE with sd_vae: first_stage_model.*, LDM names)
    weights=(WeightsAdapter("vc2", *from_schema(VC2Config, "vc2_schema", "vgen.models.videocrafter.family:build", "vc2"),
                            unwrap=keep_under(("state_dict.model.diffusion_model.", "model.diffusion_model.", "")),
                            about="VideoCrafter2 model.ckpt (model.diffusion_model.*) or a bare UNet state dict "
                                  "(T2V-Turbo's student with preset vc2_turbo)"),
             WeightsAdapter("open_clip_text", lazy("vgen.models.text.open_clip:build_encoder"),
                            official_first("open-clip-vit-h-14", lazy("vgen.models.text.open_clip:config_names")),
                            unwrap=keep_under(("state_dict.cond_stage_model.model.", "cond_stage_model.model.", ""),
                                              keep=("positional_embedding", "text_projection", "logit_scale",
                                                    "transformer.", "token_embedding.", "ln_final.")),
                            about="OpenCLIP ViT-H/14 text tower: VideoCrafter2's cond_stage_model.model.* or an "
                                  "open_clip CLIP state dict (its visual.* dropped)"),
             SD_VAE, HPS, IV2),
)
