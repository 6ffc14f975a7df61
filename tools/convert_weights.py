#!/usr/bin/env python
"""Convert an official checkpoint into a vgen safetensors file (our names, checked layout).

    python tools/convert_weights.py hunyuan        mp_rank_00_model_states.pt  hunyuan_dit.safetensors --allow-pickle
    python tools/convert_weights.py opensora_stdit OpenSora-v1-HQ-16x256x256.pth stdit.safetensors --allow-pickle
    python tools/convert_weights.py sd_vae         vae-ft-ema-560000-ema-pruned.ckpt sd_vae.safetensors --allow-pickle
    python tools/convert_weights.py t5             t5-v1_1-xxl/model.safetensors t5.safetensors
    python tools/convert_weights.py hunyuan        dit.safetensors out.safetensors --dtype bf16

What it converts is every family's declared adapters (FamilySpec.weights: the family's model and
the frozen encoders it uses; `--help` lists them with the official files each reads). An adapter
finds the state dict inside the official container, renames official names to ours where they
differ (the SD VAE's original LDM names), reshapes where layouts differ (LDM's 1x1 attention
convs), and drops tied duplicates (T5's encoder.embed_tokens.weight = shared.weight).

Inputs: `.safetensors` are read directly (no code runs), one file or a sharded checkpoint (a directory
of them, or its `*.safetensors.index.json`, as the Step-Video DiT and Step-LLM ship). `.pt` / `.pth` / `.bin` / `.ckpt` are Python
pickles, and unpickling an untrusted file can run arbitrary code: they are read only with
`--allow-pickle` (which needs torch; torch.load runs with weights_only=True where torch supports it).

Every name and shape is checked against our model built under declare_only() (no weights are
allocated) before anything is read or written: missing, unexpected and mis-shaped keys are all
named. Tensors are then converted one at a time (fp32 by default, `--dtype bf16|fp16|fp32`) and
streamed into the output, so peak memory is about one tensor (safetensors inputs, and .pt files torch
can memory-map); the file appears atomically.
"""
import argparse
import importlib
import importlib.util
import inspect
import json
import os
import struct
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
OUT_DTYPES = {"fp32": ("F32", np.float32), "fp16": ("F16", np.float16), "bf16": ("BF16", None)}
REPORT_LIMIT = 20  # names listed per problem kind; the count is always complete

if importlib.util.find_spec("vgen") is None:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class ConversionError(RuntimeError):
    pass


# ---- the models it converts: every family's adapters ------------------------------------------

def adapters():
    """{target name: WeightsAdapter} of every family's official files (its model and encoders)."""
    from vgen.models.registry import family_specs

    table = {}
    for spec in family_specs().values():
        for adapter in spec.weights:
            if table.setdefault(adapter.name, adapter) is not adapter:
                raise ConversionError(f"two adapters are named {adapter.name!r}")
    return table


def adapter_of(target: str):
    table = adapters()
    if target not in table:
        raise ConversionError(f"unknown model {target!r}; known: {sorted(table)}")
    return table[target]


def presets_of(target: str) -> List[str]:
    return list(adapter_of(target).presets())


def model_layout(target: str, preset: Optional[str] = None):
    """(expected, derived): (name, shape) of every entry a checkpoint must provide, in state-dict
    order, and the names of derived buffers (recomputed from the config, never loaded), from our
    model built under declare_only(): no weights are allocated."""
    from vgen.models.layers.init import declare_only, is_derived, named_params

    adapter = adapter_of(target)
    with declare_only():
        net = adapter.build(preset or adapter.default_preset)
    expected = [(n, tuple(int(d) for d in p.shape)) for n, p in named_params(net) if not is_derived(p)]
    return expected, [n for n, p in named_params(net) if is_derived(p)]


def expected_layout(target: str, preset: Optional[str] = None) -> List[Tuple[str, Tuple[int, ...]]]:
    return model_layout(target, preset)[0]


# ---- reading checkpoints ---------------------------------------------------------------------

class SafetensorsSource:
    """One .safetensors file, a directory of them or a sharded checkpoint's index.json, read tensor by
    tensor in its stored dtype."""

    def __init__(self, path: Path):
        importlib.import_module("mindspore")  # registers numpy's bfloat16, needed to read BF16 tensors
        from vgen.models.weights import SafetensorsWeights, WeightsError

        try:
            self._weights = SafetensorsWeights(path)
        except WeightsError as e:
            raise ConversionError(str(e))

    def keys(self) -> List[str]:
        return list(self._weights.shapes)

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(int(d) for d in self._weights.shapes[key])

    def dtype_tag(self, key: str) -> str:
        return self._weights.dtype_tag(key)

    def read(self, key: str) -> np.ndarray:
        return self._weights.raw(key)

    def close(self):
        self._weights = None


def flatten_tensors(obj, is_tensor, prefix: str = "") -> Dict[str, object]:
    """Nested dicts and lists -> {"a.b.0": tensor} (a list's items are keyed by their index, as in
    T2V-Turbo's unet_lora.pt); non-tensor leaves (step counters, configs) are dropped."""
    out = {}
    if isinstance(obj, (list, tuple)):
        obj = {str(i): v for i, v in enumerate(obj)}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_tensors(v, is_tensor, f"{prefix}{k}."))
    elif is_tensor(obj):
        out[prefix[:-1]] = obj
    return out


TORCH_INT_TAGS = {"int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


class TorchPickleSource:
    def __init__(self, path: Path):
        try:
            import torch
        except ImportError:
            raise ConversionError(f"{path} is a PyTorch pickle: reading it needs torch installed "
                                  "(pip install torch, CPU build) or a .safetensors copy of the checkpoint")
        self._torch = torch
        obj = self._load(torch, path)
        self._tensors = flatten_tensors(obj, lambda v: isinstance(v, torch.Tensor))

    @staticmethod
    def _load(torch, path: Path):
        """torch.load with weights_only=True (only tensors and plain containers are unpickled) and
        mmap (tensors read on demand) where this torch has them; a rejected file is an error,
        never a retry with full unpickling."""
        supported = inspect.signature(torch.load).parameters
        kwargs = {"map_location": "cpu"}
        if "weights_only" in supported:
            kwargs["weights_only"] = True
        else:
            print("warning: this torch has no weights_only; using plain torch.load (--allow-pickle given)",
                  file=sys.stderr)
        if "mmap" in supported:
            kwargs["mmap"] = True
        while True:
            try:
                return torch.load(str(path), **kwargs)
            except RuntimeError as e:
                if kwargs.pop("mmap", False) and "mmap" in str(e):  # legacy (non-zip) files cannot be mapped
                    continue
                raise ConversionError(f"torch.load could not read {path}: {e}")
            except Exception as e:
                raise ConversionError(f"torch.load(weights_only=True) refused {path}: {e}. Only checkpoints of "
                                      "tensors and plain containers are read.")

    def keys(self) -> List[str]:
        return list(self._tensors)

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(int(d) for d in self._tensors[key].shape)

    def dtype_tag(self, key: str) -> str:
        t = self._tensors[key]
        if t.is_floating_point():
            return "F"  # any float: converted to the output dtype
        return TORCH_INT_TAGS.get(str(t.dtype).replace("torch.", ""), str(t.dtype))

    def read(self, key: str) -> np.ndarray:
        t = self._tensors[key].detach().cpu()
        if t.dtype == self._torch.bfloat16:  # numpy has no bf16: widen exactly
            t = t.float()
        return t.contiguous().numpy()

    def close(self):
        self._tensors = {}


def open_source(path: Path, allow_pickle: bool):
    suffix = path.suffix.lower()
    if path.is_dir() or path.name.endswith(".safetensors.index.json"):  # a sharded safetensors checkpoint
        return SafetensorsSource(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    if suffix in SAFETENSORS_SUFFIXES:
        return SafetensorsSource(path)
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ConversionError(
                f"{path} is a PyTorch pickle ({suffix}): unpickling can run arbitrary code, so it is read only "
                f"with --allow-pickle (torch.load with weights_only=True). Pass --allow-pickle if you trust the "
                f"file, or convert from a .safetensors copy.")
        return TorchPickleSource(path)
    raise ConversionError(f"unknown checkpoint format {suffix!r} for {path}: expected .safetensors or "
                          f"{'/'.join(PICKLE_SUFFIXES)} (with --allow-pickle)")


# ---- dtype conversion ------------------------------------------------------------------------

def bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> bfloat16 bit patterns (uint16), round to nearest even as torch does; NaN stays NaN."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    return np.where(nan, ((u >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16), rounded)


def as_float32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float32)  # bf16 (mindspore's numpy dtype) and fp16 widen exactly


def encode(a: np.ndarray, out_dtype: str, name: str) -> Tuple[str, bytes]:
    """(safetensors dtype tag, raw little-endian bytes) of one tensor in the output dtype; float
    tensors only (integer tensors are copied as they are)."""
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":
        tags = {np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.bool_): "BOOL",
                np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8", np.dtype(np.int16): "I16"}
        if arr.dtype not in tags:
            raise ConversionError(f"{name}: unsupported integer dtype {arr.dtype}")
        return tags[arr.dtype], np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes()
    x = as_float32(arr)
    tag, np_dtype = OUT_DTYPES[out_dtype]
    if out_dtype == "bf16":
        data = bf16_bits(x).astype("<u2")
        widened = (data.astype(np.uint32) << np.uint32(16)).view(np.float32)
    else:
        data = x.astype(np.dtype(np_dtype).newbyteorder("<"))
        widened = data.astype(np.float32)
    overflow = np.isfinite(x) & ~np.isfinite(widened)
    if overflow.any():
        raise ConversionError(f"{name}: {int(overflow.sum())} value(s) overflow {out_dtype} "
                              f"(max |x| = {float(np.abs(x[np.isfinite(x)]).max()):.4g}); use --dtype fp32 or bf16")
    return tag, np.ascontiguousarray(data).tobytes()


# ---- writing safetensors (streamed, atomic) -------------------------------------------------

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_header(entries: Sequence[Tuple[str, str, Tuple[int, ...]]], metadata: Dict[str, str]) -> bytes:
    """The length-prefixed JSON header for tensors stored back to back in `entries` order; padded
    with spaces to a multiple of 8 bytes so every tensor starts aligned."""
    header, offset = {"__metadata__": dict(metadata)}, 0
    for name, tag, shape in entries:
        size = DTYPE_SIZES[tag] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


INT_TAGS = ("I64", "I32", "I16", "I8", "U8", "BOOL")


def out_tag(source_tag: str, out_dtype: str, name: str) -> str:
    """Float entries take the output dtype; integer entries (step counters, index tables) keep theirs."""
    if source_tag in INT_TAGS:
        return source_tag
    if source_tag in ("F", "F64", "F32", "F16", "BF16"):
        return OUT_DTYPES[out_dtype][0]
    raise ConversionError(f"{name}: unsupported checkpoint dtype {source_tag}")


def write_atomically(out: Path, header: bytes, chunks) -> None:
    """Write header + chunks to a temporary file beside `out`, fsync, then rename over `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for data in chunks:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- the conversion --------------------------------------------------------------------------

def check_layout(expected: Sequence[Tuple[str, Tuple[int, ...]]], found: Dict[str, Tuple[int, ...]]) -> List[str]:
    """Problems (missing / unexpected / mis-shaped, each named) between the model and the checkpoint."""
    want = dict(expected)
    missing = [n for n, _ in expected if n not in found]
    unexpected = sorted(n for n in found if n not in want)
    misshaped = [f"{n}: checkpoint {list(found[n])} vs model {list(want[n])}"
                 for n, _ in expected if n in found and tuple(found[n]) != tuple(want[n])]

    def listed(items):
        more = f" ... and {len(items) - REPORT_LIMIT} more" if len(items) > REPORT_LIMIT else ""
        return "\n    " + "\n    ".join(items[:REPORT_LIMIT]) + more

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s):" + listed(missing))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s):" + listed(unexpected))
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped key(s):" + listed(misshaped))
    return problems


def matching_presets(target: str, found: Dict[str, Tuple[int, ...]], skip: str) -> List[str]:
    """Other presets of the model whose layout the checkpoint matches exactly (a hint on failure)."""
    return [p for p in presets_of(target) if p != skip and not check_layout(expected_layout(target, p), found)]


def convert(family: str, src: Path, out: Path, *, allow_pickle: bool = False, dtype: str = "fp32",
            preset: Optional[str] = None, load_key: str = "module", strip_prefixes: Sequence[str] = ()) -> Dict:
    """Check then convert; returns a summary. Raises ConversionError naming every layout problem."""
    spec = adapter_of(family)
    if dtype not in OUT_DTYPES:
        raise ConversionError(f"unknown --dtype {dtype!r}; choose from {sorted(OUT_DTYPES)}")
    preset = preset or spec.default_preset
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ConversionError("the output must not overwrite the input checkpoint")

    source = open_source(src, allow_pickle)
    try:
        keys = source.keys()
        raw_of = {}  # key after --strip-prefix -> raw key
        for raw in keys:
            key = raw
            for prefix in strip_prefixes:
                key = key[len(prefix):] if key.startswith(prefix) else key
            if key in raw_of:
                raise ConversionError(f"--strip-prefix makes {raw_of[key]!r} and {raw!r} collide")
            raw_of[key] = raw
        try:
            official = spec.unwrap(list(raw_of), load_key)  # official name -> key after prefix stripping
        except ValueError as e:
            raise ConversionError(str(e))
        rename = spec.rename or (lambda name: name)
        ours = {rename(name): raw_of[key] for name, key in official.items() if name not in spec.tied}
        expected, derived = model_layout(family, preset)
        dropped_derived = sorted(set(ours) & set(derived))
        for name in dropped_derived:  # the official loaders drop these too; we recompute them
            del ours[name]

        want = dict(expected)

        def read(name):
            array = source.read(ours[name])
            return spec.reshape(name, array, want[name]) if spec.reshape else array

        def shape_of(name):  # the shape `read` will give (a reshape may also resample, e.g. a frame table)
            shape = source.shape(ours[name])
            if spec.reshape and name in want and tuple(shape) != tuple(want[name]):
                try:
                    return tuple(spec.reshape(name, np.empty(shape, np.uint8), want[name]).shape)
                except ValueError:  # it cannot: the mismatch is reported
                    return shape
            return shape

        found = {name: shape_of(name) for name in ours}
        problems = check_layout(expected, found)
        if problems:
            hint = ""
            others = matching_presets(family, found, preset)
            if others:
                hint = f"\nThe checkpoint matches preset(s) {others}: pass --preset {others[0]}."
            raise ConversionError(f"{src} does not match {family} ({preset}), nothing written:\n  "
                                  + "\n  ".join(problems) + hint)

        entries = [(name, out_tag(source.dtype_tag(ours[name]), dtype, name), shape) for name, shape in expected]
        metadata = {"format": "np", "family": family, "preset": preset, "source": src.name, "dtype": dtype}
        header = safetensors_header(entries, metadata)

        def chunks():
            for name, tag, shape in entries:
                got_tag, data = encode(read(name), dtype, name)
                if got_tag != tag or len(data) != DTYPE_SIZES[tag] * int(np.prod(shape, dtype=np.int64)):
                    raise ConversionError(f"{name}: planned {tag} {list(shape)}, got {got_tag} of {len(data)} bytes")
                yield data

        write_atomically(out, header, chunks())
    finally:
        source.close()
    n_elements = sum(int(np.prod(s, dtype=np.int64)) for _, s in expected)
    return {"tensors": len(expected), "elements": n_elements, "dropped": len(keys) - len(ours),
            "dropped_derived": dropped_derived, "dtype": dtype, "preset": preset, "out": str(out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", metavar="model", choices=sorted(adapters()),
                    help="what the checkpoint holds: " + "; ".join(f"{n}: {a.about}" for n, a in
                                                                  sorted(adapters().items())))
    ap.add_argument("checkpoint", type=Path, help="the official .safetensors (a file, a directory of them or a "
                                                  "sharded checkpoint's index.json) or .pt / .pth / .bin / .ckpt file")
    ap.add_argument("out", type=Path, help="the safetensors file to write (written atomically)")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="read PyTorch pickles (.pt/.pth/.bin) with torch.load(weights_only=True); only for "
                         "files you trust")
    ap.add_argument("--dtype", choices=sorted(OUT_DTYPES), default="fp32", help="output dtype (default fp32)")
    ap.add_argument("--preset", default=None, help="model preset to check against (default: the official "
                                                   "release, e.g. HYVideo-T/2-cfgdistill, 884-16c)")
    ap.add_argument("--load-key", default="module", help='DiT container to read: "module" (default) or "ema"')
    ap.add_argument("--strip-prefix", action="append", default=[],
                    help="remove this key prefix first (repeatable), e.g. model.diffusion_model.")
    args = ap.parse_args(argv)
    try:
        summary = convert(args.family, args.checkpoint, args.out, allow_pickle=args.allow_pickle, dtype=args.dtype,
                          preset=args.preset, load_key=args.load_key, strip_prefixes=args.strip_prefix)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out']}: {summary['tensors']} tensors, {summary['elements']:,} elements as "
          f"{summary['dtype']} ({args.family} {summary['preset']}); {summary['dropped']} checkpoint entries "
          f"outside the model skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
