#!/usr/bin/env python
"""Merge LoRA adapters into the base weights: W += (alpha / rank) * up @ down (conv adapters: the
k-conv `down` then the 1x1 `up` as one k-conv), giving one safetensors file in the official layout
(no adapter keys).

    python tools/merge_lora.py <base.safetensors> <run>/checkpoints/step_<n> <merged.safetensors> [--kind ema]
    python tools/merge_lora.py <base.safetensors> adapters.safetensors <merged.safetensors> [--scale 1]

From a run checkpoint, rank and alpha come from the run's frozen config (<run>/config.yaml,
model.lora); an adapters file (e.g. a released T2V-Turbo LoRA through tools/convert_lora.py)
merges at --scale (default 1: T2V-Turbo's)."""
import argparse
from pathlib import Path


def merge(base: dict, adapters: dict, scale: float) -> dict:
    """The base arrays with every `<path>.lora_{up,down}.weight` pair folded into `<path>.weight`."""
    from vgen.models.lora import lora_delta

    merged = dict(base)
    paths = sorted({k[:-len(".lora_down.weight")] for k in adapters if k.endswith(".lora_down.weight")})
    if not paths:
        raise SystemExit("the checkpoint holds no LoRA adapters (was model.lora.rank > 0?)")
    for path in paths:
        up, down = adapters[f"{path}.lora_up.weight"], adapters[f"{path}.lora_down.weight"]
        w = merged[f"{path}.weight"]
        merged[f"{path}.weight"] = (w.astype("float64") + scale * lora_delta(up, down, w.shape)).astype(w.dtype)
    return merged


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--kind", choices=("model", "ema"), default="model")
    ap.add_argument("--scale", type=float, default=1.0, help="the adapters' scale when merging an adapters file")
    args = ap.parse_args(argv)
    import numpy as np
    from omegaconf import OmegaConf
    from safetensors.numpy import load_file, save_file

    from vgen.train.checkpoint import STATE_FILE, CheckpointReader

    if (args.checkpoint / STATE_FILE).is_file():
        cfg = OmegaConf.load(args.checkpoint.parent.parent / "config.yaml")
        rank = cfg.model.lora.rank
        scale = (cfg.model.lora.alpha or rank) / rank
        adapters = CheckpointReader(args.checkpoint).arrays(args.kind)
    else:
        scale, adapters = args.scale, load_file(str(args.checkpoint))
    merged = merge(load_file(str(args.base)), adapters, scale)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in merged.items()}, str(tmp))
    tmp.replace(args.out)
    n = sum(1 for k in adapters if k.endswith(".lora_down.weight"))
    print(f"merged {n} adapted layers (scale {scale:g}) into {args.out}")


if __name__ == "__main__":
    main()
