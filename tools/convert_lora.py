#!/usr/bin/env python
"""T2V-Turbo's released LoRA files (lora_diffusion's unnamed list) to and from vgen's named adapters.

    python tools/convert_lora.py import vc2_turbo unet_lora.pt adapters.safetensors --allow-pickle
    python tools/convert_lora.py export vc2_turbo <run>/checkpoints/step_<n> unet_lora.safetensors
    python tools/convert_lora.py export ms_turbo adapters.safetensors unet_lora.safetensors

`model` is a conf/model name. A released file is a list of [up, down] per adapted layer in module
order (`vgen.models.lora.released_order`; at full size it is the released files' order, entry for
entry: tests/test_lora_conv.py). The model is built declared only (no weights allocated), the
family's LoRA targets adapted (--targets overrides) at the file's rank, and every entry's shape is
checked before anything is written.

import: entries "0".."N-1" (a .pt list, read only with --allow-pickle as tools/convert_weights.py
reads pickles, or a safetensors file keyed by index) -> `<path>.lora_{up,down}.weight`, the file
model.lora.pretrained loads. export: a run checkpoint (its adapters) or such a named file -> a
safetensors keyed "0".."N-1", the index -> name map in its metadata ("names", a JSON list); loaded
in order, it is the list the official code injects (`inject_trainable_lora_extended(loras=...)`).
Files appear atomically."""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_weights import ConversionError, open_source  # noqa: E402  (the sibling tool's readers)


def adapter_layout(model: str, rank: int, targets: Sequence[str] = ()) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape) of the model's adapters at `rank`, in the released order."""
    from vgen.cli.common import compose_config
    from vgen.models.layers.init import named_params
    from vgen.models.lora import adapt_family, released_order
    from vgen.models.registry import build_family

    overrides = [f"model={model}", f"model.lora.rank={rank}"]
    if targets:
        overrides.append("model.lora.targets=[" + ",".join(f"'{t}'" for t in targets) + "]")
    cfg = compose_config(overrides)
    family = build_family(cfg.model)  # declared only
    adapt_family(family, cfg.model.lora, seed=0)
    shapes = {n: tuple(p.shape) for n, p in named_params(family.net)}
    return [(name, shapes[name]) for name in released_order(family.net)]


def file_rank(shapes: Sequence[Tuple[int, ...]]) -> int:
    """The rank a list of [up, down] pairs was trained at: the largest up's inner size (layers
    with fewer channels than the rank are clamped)."""
    if not shapes or len(shapes) % 2:
        raise ConversionError(f"a LoRA list holds [up, down] pairs: got {len(shapes)} entries")
    return max(int(s[1]) for s in shapes[0::2])


def check_shapes(layout, found: Sequence[Tuple[int, ...]], what: str) -> None:
    if len(found) != len(layout):
        raise ConversionError(f"{what} has {len(found)} entries; the model's adapters are {len(layout)} "
                              f"({len(layout) // 2} layers x [up, down]): another model or --targets?")
    bad = [f"entry {i} ({name}): file {list(s)} vs model {list(want)}"
           for i, ((name, want), s) in enumerate(zip(layout, found)) if tuple(s) != tuple(want)]
    if bad:
        raise ConversionError(f"{what} does not match the model's adapters, nothing written: {len(bad)} "
                              "mis-shaped entries: " + "; ".join(bad[:5]))


def write(out: Path, arrays: Dict[str, np.ndarray], metadata: Dict[str, str]) -> None:
    from safetensors.numpy import save_file

    tmp = out.with_name(out.name + ".tmp")
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}, str(tmp), metadata=metadata)
    tmp.replace(out)


def import_released(model: str, src: Path, out: Path, allow_pickle: bool, targets=()) -> Dict:
    source = open_source(src, allow_pickle)
    try:
        keys = source.keys()
        if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
            raise ConversionError(f"{src} is not a released LoRA list: expected entries 0..{len(keys) - 1}, "
                                  f"got keys like {sorted(keys)[:3]}")
        found = [source.shape(str(i)) for i in range(len(keys))]
        rank = file_rank(found)
        layout = adapter_layout(model, rank, targets)
        check_shapes(layout, found, str(src))
        arrays = {name: source.read(str(i)) for i, (name, _) in enumerate(layout)}
    finally:
        source.close()
    write(out, arrays, {"format": "np", "model": model, "rank": str(rank), "source": src.name})
    return {"entries": len(arrays), "rank": rank, "out": str(out)}


def read_named(src: Path, kind: str) -> Dict[str, np.ndarray]:
    """The adapters of a run checkpoint or of a named adapters file."""
    from safetensors.numpy import load_file

    from vgen.train.checkpoint import STATE_FILE, CheckpointReader

    if (src / STATE_FILE).is_file():
        arrays = CheckpointReader(src).arrays(kind)
    else:
        arrays = load_file(str(src))
    adapters = {k: v for k, v in arrays.items() if k.endswith((".lora_up.weight", ".lora_down.weight"))}
    if not adapters:
        raise ConversionError(f"{src} holds no LoRA adapters (`<path>.lora_up.weight` / `.lora_down.weight`)")
    return adapters


def export_released(model: str, src: Path, out: Path, kind: str = "model", targets=()) -> Dict:
    adapters = read_named(src, kind)
    rank = max(int(v.shape[0]) for k, v in adapters.items() if k.endswith(".lora_down.weight"))
    layout = adapter_layout(model, rank, targets)
    missing = [name for name, _ in layout if name not in adapters]
    extra = sorted(set(adapters) - {name for name, _ in layout})
    if missing or extra:
        raise ConversionError(f"{src}'s adapters are not the model's: {len(missing)} missing (e.g. {missing[:3]}), "
                              f"{len(extra)} unexpected (e.g. {extra[:3]})")
    check_shapes(layout, [adapters[name].shape for name, _ in layout], str(src))
    arrays = {str(i): adapters[name] for i, (name, _) in enumerate(layout)}
    write(out, arrays, {"format": "np", "model": model, "rank": str(rank),
                        "names": json.dumps([name for name, _ in layout])})
    return {"entries": len(arrays), "rank": rank, "out": str(out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("direction", choices=("import", "export"))
    ap.add_argument("model", help="conf/model name, e.g. vc2_turbo, ms_turbo")
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--allow-pickle", action="store_true", help="import: read a .pt list (torch.load, weights_only)")
    ap.add_argument("--kind", choices=("model", "ema"), default="model", help="export from a checkpoint: which weights")
    ap.add_argument("--targets", nargs="*", default=(), help="LoRA target patterns (default: the family's)")
    args = ap.parse_args(argv)
    if args.src.resolve() == args.out.resolve():
        print("error: the output must not overwrite the input", file=sys.stderr)
        return 2
    from vgen.config.validate import ConfigError

    try:
        if args.direction == "import":
            summary = import_released(args.model, args.src, args.out, args.allow_pickle, args.targets)
        else:
            summary = export_released(args.model, args.src, args.out, args.kind, args.targets)
    except (ConversionError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out']}: {summary['entries']} entries ({summary['entries'] // 2} layers, rank "
          f"{summary['rank']}, {args.model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
