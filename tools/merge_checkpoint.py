#!/usr/bin/env python
"""Merge a sharded checkpoint (ZeRO at any worker count) into one safetensors file in the
official layout (the fp32 master weights, buffers included; `--kind ema` for the EMA weights).

    python tools/merge_checkpoint.py runs/<run>/checkpoints/step_1000 model.safetensors [--kind ema]
"""
import argparse
import sys
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a checkpoints/step_<n> directory (sharded or whole)")
    ap.add_argument("out", type=Path, help="the safetensors file to write")
    ap.add_argument("--kind", choices=("model", "ema"), default="model")
    args = ap.parse_args(argv)
    import numpy as np
    from safetensors.numpy import save_file

    from vgen.train.checkpoint import CheckpointReader

    reader = CheckpointReader(args.checkpoint)
    if not reader.has(args.kind):
        sys.exit(f"{args.checkpoint} has no {args.kind} weights")
    arrays = reader.arrays(args.kind)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(arrays)} tensors, {sum(int(a.size) for a in arrays.values()):,} elements")


if __name__ == "__main__":
    main()
