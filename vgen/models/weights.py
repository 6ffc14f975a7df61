"""Moving weights between a net and safetensors files under the official parameter names."""
import logging
from pathlib import Path
from typing import Dict, Iterable

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from .layers.init import is_derived, named_params

log = logging.getLogger("vgen")


class WeightsError(RuntimeError):
    pass


def net_arrays(net: nn.Cell, names: Iterable[str] = None) -> Dict[str, np.ndarray]:
    """{name: fp32 array} of the net's parameters and buffers (all of them unless `names`)."""
    wanted = set(names) if names is not None else None
    return {n: p.asnumpy().astype(np.float32) if p.dtype != ms.bfloat16 else p.astype(ms.float32).asnumpy()
            for n, p in named_params(net) if wanted is None or n in wanted}


def load_arrays(net: nn.Cell, arrays: Dict[str, np.ndarray], source: str, strict: bool = True,
                optional: Iterable[str] = ()) -> None:
    """Copy arrays into the net (as fp32). Derived buffers are recomputed, never loaded; parameters
    whose names start with an `optional` prefix keep their values when the file lacks them."""
    missing, mismatched = [], []
    optional = tuple(optional)
    for name, p in named_params(net):
        if is_derived(p) or (optional and name.startswith(optional) and name not in arrays):
            continue
        arr = arrays.get(name)
        if arr is None:
            missing.append(name)
        elif tuple(arr.shape) != tuple(p.shape):
            mismatched.append(f"{name}: file {list(arr.shape)} vs model {list(p.shape)}")
        else:
            p.set_data(Tensor(np.asarray(arr, np.float32)))
    known = {n for n, _ in named_params(net)}
    unexpected = sorted(set(arrays) - known)
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
    if missing:
        problems.append(f"{len(missing)} parameter(s) missing, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
    if problems and (strict or mismatched):
        raise WeightsError(f"{source} does not match the model's layout: " + " | ".join(problems)
                           + ". Convert official weights with tools/convert_weights.py, or check model= matches "
                           "the checkpoint's size.")
    for msg in problems:
        log.warning("%s: %s", source, msg)


def load_safetensors(net: nn.Cell, path: str, strict: bool = True, optional: Iterable[str] = ()) -> None:
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        raise WeightsError(f"weights file not found: {path} (model.pretrained)")
    load_arrays(net, load_file(path), path, strict, optional)
