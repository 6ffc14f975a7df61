"""Moving weights between a net and safetensors files under the official parameter names."""
import json
import logging
from pathlib import Path
from typing import Dict, Iterable, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from .layers.init import init_value, is_derived, named_params

log = logging.getLogger("vgen")


class WeightsError(RuntimeError):
    pass


def net_arrays(net: nn.Cell, names: Iterable[str] = None) -> Dict[str, np.ndarray]:
    """{name: fp32 array} of the net's parameters and buffers (all of them unless `names`)."""
    wanted = set(names) if names is not None else None
    return {n: p.asnumpy().astype(np.float32) if p.dtype != ms.bfloat16 else p.astype(ms.float32).asnumpy()
            for n, p in named_params(net) if wanted is None or n in wanted}


def layout_problems(expected: Dict[str, tuple], found: Dict[str, tuple], optional: Iterable[str] = ()) -> tuple:
    """(problems, any shape mismatch) between the model's {name: shape} and a file's; names that
    start with an `optional` prefix may be missing."""
    optional = tuple(optional)
    missing = [n for n in expected if n not in found and not (optional and n.startswith(optional))]
    mismatched = [f"{n}: file {list(found[n])} vs model {list(shape)}" for n, shape in expected.items()
                  if n in found and tuple(found[n]) != tuple(shape)]
    unexpected = sorted(set(found) - set(expected))
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
    if missing:
        problems.append(f"{len(missing)} parameter(s) missing, e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
    return problems, bool(mismatched)


def check_layout(source: str, problems, mismatched: bool, strict: bool) -> None:
    """Raise for a file that does not fit (strict, or any shape mismatch); else warn."""
    if problems and (strict or mismatched):
        raise WeightsError(f"{source} does not match the model's layout: " + " | ".join(problems)
                           + ". Convert official weights with tools/convert_weights.py, or check model= matches "
                           "the checkpoint's size.")
    for msg in problems:
        log.warning("%s: %s", source, msg)


def loadable(net: nn.Cell, skip=frozenset()) -> Dict[str, tuple]:
    """{name: shape} of the entries a weights file provides (derived buffers are recomputed)."""
    return {n: tuple(p.shape) for n, p in named_params(net) if not is_derived(p) and n not in skip}


def open_pretrained(path: str, net: nn.Cell, init_only: Iterable[str] = (), skip=frozenset(),
                    strict: bool = True) -> "SafetensorsWeights":
    """model.pretrained opened and checked against the net's loadable parameters, less `skip` (a
    LoRA net's adapters, which the base file does not hold); `init_only` prefixes may be missing."""
    try:
        weights = SafetensorsWeights(path)
    except WeightsError as e:
        raise WeightsError(f"model.pretrained: {e}") from e
    check_layout(path, *layout_problems(loadable(net, skip=skip), weights.shapes, init_only), strict=strict)
    return weights


def open_adapters(path: str, shapes: Dict[str, Tuple[int, ...]]) -> "SafetensorsWeights":
    """model.lora.pretrained opened and checked: exactly the net's adapters (`shapes`), shape for
    shape (tools/convert_lora.py makes such a file from a released LoRA)."""
    try:
        weights = SafetensorsWeights(path)
    except WeightsError as e:
        raise WeightsError(f"model.lora.pretrained: {e}") from e
    check_layout(path, *layout_problems(shapes, weights.shapes), strict=True)
    return weights


def load_arrays(net: nn.Cell, arrays: Dict[str, np.ndarray], source: str, strict: bool = True,
                optional: Iterable[str] = ()) -> None:
    """Copy arrays into the net (as fp32). Derived buffers are recomputed, never loaded; parameters
    whose names start with an `optional` prefix keep their values when the file lacks them."""
    problems, mismatched = layout_problems(loadable(net), {k: tuple(v.shape) for k, v in arrays.items()}, optional)
    check_layout(source, problems, mismatched, strict)
    for name, p in named_params(net):
        if not is_derived(p) and name in arrays:
            p.set_data(Tensor(np.asarray(arrays[name], np.float32)))


# ---- reading by slices: a rank's flat ZeRO-3 segment without the whole tensor ---------------------

def flat_segment(read_rows, shape, shards: int, rank: int) -> np.ndarray:
    """Elements [rank*s, (rank+1)*s) of the flattened tensor (s = ceil(numel / shards)), zero-padded,
    as fp32; `read_rows(a, b)` returns rows a..b of dim 0 (the whole tensor for a 0-d one)."""
    numel = int(np.prod(shape)) if len(shape) else 1
    size = -(-numel // shards)
    lo, hi = min(rank * size, numel), min((rank + 1) * size, numel)
    out = np.zeros(size, np.float32)
    if hi > lo:
        row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if len(shape) == 0:
            flat = np.asarray(read_rows(0, 1), np.float32).reshape(-1)
            out[:hi - lo] = flat[lo:hi]
        else:
            r0, r1 = lo // row, -(-hi // row)
            rows = np.asarray(read_rows(r0, r1), np.float32).reshape(-1)
            out[:hi - lo] = rows[lo - r0 * row:hi - r0 * row]
    return out


def safetensors_files(path) -> list:
    """The files of a safetensors checkpoint: one file, a directory of them (its *.index.json's
    files when it has one, else every *.safetensors), or an index.json (transformers' / diffusers'
    sharded checkpoints: {"weight_map": {name: file}})."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if len(indexes) == 1:
            path = indexes[0]
        else:
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise WeightsError(f"{path} holds no .safetensors files")
            return files
    if path.name.endswith(".json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise WeightsError(f"{path}: not a safetensors index (a JSON with weight_map): {e}") from e
        files = [path.parent / f for f in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WeightsError(f"{path} names missing file(s) {missing[:3]}")
        return files
    if not path.is_file():
        raise WeightsError(f"weights not found: {path} (a .safetensors file, a directory of them or an index.json)")
    return [path]


class SafetensorsWeights:
    """A safetensors checkpoint (one file or several: see safetensors_files) read one tensor, or one
    flat segment of a tensor, at a time (no whole-file load); `prefix` selects the entries
    "<prefix><name>" (e.g. "adam_m." of optimizer.safetensors)."""

    def __init__(self, path, prefix: str = ""):
        from safetensors import safe_open

        self.path, self.prefix = str(path), prefix
        self._handles, self.shapes = {}, {}
        for file in safetensors_files(path):
            handle = safe_open(str(file), framework="numpy").__enter__()
            for key in handle.keys():
                if key.startswith(prefix):
                    name = key[len(prefix):]
                    if name in self._handles:
                        raise WeightsError(f"{self.path}: {key} is stored twice")
                    self._handles[name] = handle
                    self.shapes[name] = tuple(handle.get_slice(key).get_shape())

    def has(self, name: str) -> bool:
        return name in self.shapes

    def raw(self, name: str) -> np.ndarray:
        """The tensor as stored (its own dtype)."""
        return self._handles[name].get_tensor(self.prefix + name)

    def dtype_tag(self, name: str) -> str:
        return self._handles[name].get_slice(self.prefix + name).get_dtype()

    def whole(self, name: str) -> np.ndarray:
        return np.asarray(self.raw(name), np.float32)

    def segment(self, name: str, shards: int, rank: int) -> np.ndarray:
        shape = self.shapes[name]
        if not len(shape):
            return flat_segment(lambda a, b: self.whole(name), shape, shards, rank)
        sl = self._handles[name].get_slice(self.prefix + name)
        return flat_segment(lambda a, b: sl[a:b], shape, shards, rank)


def fill_parameters(net: nn.Cell, seed: int, sources=(), sharded=frozenset(), shards: int = 1,
                    rank: int = 0) -> None:
    """Give every declared parameter its value, in fp32: from the first source that has it (a
    checkpoint, a pretrained file), else its initialisation. Parameters named in `sharded` get only
    this rank's flat ZeRO-3 segment, read by slices: no rank holds a whole sharded parameter from
    a file, and only one at a time from an initialisation."""
    for name, p in named_params(net):
        src = None if is_derived(p) else next((s for s in sources if s.has(name)), None)
        if name in sharded:
            if src is not None:
                seg = src.segment(name, shards, rank)
            else:  # one whole initial value at a time
                value = init_value(p, name, seed)
                seg = flat_segment(lambda a, b: value if value.ndim == 0 else value[a:b], value.shape, shards, rank)
            p.set_data(Tensor(seg), slice_shape=True)
        else:
            p.set_data(Tensor(src.whole(name) if src is not None else init_value(p, name, seed)))


def load_safetensors(net: nn.Cell, path: str, strict: bool = True, optional: Iterable[str] = ()) -> None:
    """Copy a safetensors checkpoint (file, directory or index.json) into a net, one tensor at a time."""
    src = SafetensorsWeights(path)
    check_layout(str(path), *layout_problems(loadable(net), src.shapes, optional), strict)
    for name, p in named_params(net):
        if not is_derived(p) and src.has(name):
            p.set_data(Tensor(src.whole(name)))
