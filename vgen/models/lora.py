"""LoRA as a plan applied onto an unchanged model.

`apply_lora(net, rank, alpha, targets)` swaps every selected `Linear`, `Conv2d` or `Conv3d` for its
LoRA layer at the same attribute path. The LoRA layer takes over the base layer's own `weight` /
`bias` Parameters, so every base name (and value) stays exactly the official one, and adds two
small layers as children:

    <module path>.lora_down.weight   Linear [r, in]     conv [r, in, *k] (the base's kernel, stride, padding)
    <module path>.lora_up.weight     Linear [out, r]    conv [out, r, 1, ..]   zeros: the net starts as the base

    y = base(x) + (alpha / rank) * up(down(x))      r = min(rank, in, out)

Two conventions (`style`) differ in the down init and where dropout acts:
- "peft" (peft, kohya / musubi-tuner HunyuanVideo LoRAs): down ~ kaiming-uniform(a=sqrt(5)) =
  U(+-1/sqrt(fan_in)); dropout on the adapter's input.
- "lora_diffusion" (cloneofsimo's lora_diffusion, which T2V-Turbo trains with): down ~ N(0, 1/r);
  dropout on the adapter's output, none on Conv3d adapters (as its LoraInjectedConv3d).
The rank is clamped to min(in, out) (T2V-Turbo's 4-channel in/out convs get r = 4); the scale uses
the configured rank (T2V-Turbo: alpha = rank, scale 1, also on the clamped layers).

Why these names: the base entries keep their official names, so an official checkpoint still loads
by name and a merged net (`merge_lora(net, unload=True)`) is again exactly the official layout;
`lora_down` / `lora_up` are the kohya-style names (musubi-tuner: `lora_unet_<path>.lora_down.weight`)
and T2V-Turbo's unet_lora.pt holds [up, down] pairs per module in module order, so adapters map 1:1
onto those files (peft's lora_A / lora_B are the same down / up matrices). Dropout acts only in
training mode: set the mode before compiling, a compiled graph keeps the mode it saw.

Targets are fnmatch patterns (case-sensitive) on the dotted module path, e.g.
"double_blocks.*.img_attn_qkv", "*.linear1", "single_blocks.*", "*" ('*' also crosses dots). A layer
is adapted when any pattern matches its path; a pattern that selects no layer is an error (typos
would otherwise silently train nothing).

The adapters are ordinary declared parameters (`new_param`): on a net built under `declare_only()`
they are declared too (vgen-inspect lists them, `materialize` fills them by name); on an already
materialized net they are filled at once from the same (seed, name) rule. Everything else in the
net is frozen (requires_grad False), so trainers that train `requires_grad` parameters train only
the adapters. The adapters are ShardableLayers: a ZeRO-3 plan shards them like any layer (and the
frozen base weights with them, so a 30B base is never whole on a rank).
"""
import fnmatch
from contextlib import contextmanager
from typing import Dict, List, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..config.models import LORA_STYLES
from .layers.conv import Conv2d, Conv3d, ConvNd
from .layers.init import declare_only, init_value, named_params, normal, uniform_fan_in, zeros
from .layers.linear import Linear
from .layers.paths import cell_at, cells_with_paths, replace_cell
from .weights import WeightsError

ADAPTER_ATTRS = ("lora_down", "lora_up")
STYLES = LORA_STYLES


class _Adapted:
    """What every LoRA layer shares: the low-rank update and the switch that turns it off."""

    def _adopt(self, base, n_in: int, n_out: int, rank: int, alpha: float, dropout: float, style: str):
        if style not in STYLES:
            raise ValueError(f"LoRA style {style!r}: expected one of {STYLES}")
        # the base cell itself, kept out of the cell tree, so unloading puts it back unchanged
        object.__setattr__(self, "base_cell", base)
        self.sources = base.sources
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha = min(int(rank), n_in, n_out), float(alpha)
        self.scale = self.alpha / int(rank)
        fan_in = int(np.prod(base.weight.shape[1:]))
        self.down_init = uniform_fan_in(fan_in) if style == "peft" else normal(1.0 / self.rank)
        on_update = style == "lora_diffusion"
        if on_update and isinstance(base, Conv3d):
            dropout = 0.0
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.dropout_on_update = on_update
        self.enabled = True  # False: the base layer alone (a compiled graph keeps the value it saw)

    def update(self, x):
        if self.lora_dropout is not None and not self.dropout_on_update:
            x = self.lora_dropout(x)
        u = self.lora_up(self.lora_down(x)) * self.scale
        if self.lora_dropout is not None and self.dropout_on_update:
            u = self.lora_dropout(u)
        return u


class LoRALinear(_Adapted, Linear):
    """A Linear plus a low-rank update; built from an existing Linear whose Parameters it reuses."""

    def __init__(self, base: Linear, rank: int, alpha: float, dropout: float = 0.0, style: str = "peft"):
        nn.Cell.__init__(self)  # not Linear.__init__: the base Parameters are taken over, not re-declared
        self.in_features, self.out_features = base.in_features, base.out_features
        self._adopt(base, base.in_features, base.out_features, rank, alpha, dropout, style)
        self.lora_down = Linear(self.in_features, self.rank, bias=False, init=self.down_init)
        self.lora_up = Linear(self.rank, self.out_features, bias=False, init=zeros)

    def construct(self, x):
        y = super().construct(x)
        return y + self.update(x) if self.enabled else y


class _LoRAConv(_Adapted):
    """A convolution plus a low-rank update: down has the base's kernel, stride and padding, up is 1x1."""

    def __init__(self, base: ConvNd, rank: int, alpha: float, dropout: float = 0.0, style: str = "peft"):
        nn.Cell.__init__(self)
        self.stride, self.padding, self.padded, self.on_cpu = base.stride, base.padding, base.padded, base.on_cpu
        n_out, n_in, *kernel = base.weight.shape
        self._adopt(base, n_in, n_out, rank, alpha, dropout, style)
        cls = type(self).conv_class
        self.lora_down = cls(n_in, self.rank, tuple(kernel), self.stride, self.padding, bias=False, init=self.down_init)
        self.lora_up = cls(self.rank, n_out, 1, bias=False, zero=True)

    def conv(self, x):
        y = ConvNd.conv(self, x)  # not super(): graph mode resolves it from type(self), a loop here
        return y + self.update(x) if self.enabled else y


class LoRAConv2d(_LoRAConv, Conv2d):
    conv_class = Conv2d


class LoRAConv3d(_LoRAConv, Conv3d):
    conv_class = Conv3d


def lora_layer(base, rank: int, alpha: float, dropout: float, style: str):
    """The LoRA layer for a Linear / Conv2d / Conv3d. It computes as the plain layer does (+ the
    update): a subclass's own construct is not kept, so adapt only layers that compute as their
    base class (every Linear and conv of the UNets does; VC2's first conv is called by its Blocks
    like any conv)."""
    if isinstance(base, Linear):
        return LoRALinear(base, rank, alpha, dropout, style)
    cls = LoRAConv3d if isinstance(base, Conv3d) else LoRAConv2d
    return cls(base, rank, alpha, dropout, style)


def lora_delta(up: np.ndarray, down: np.ndarray, weight_shape) -> np.ndarray:
    """The base weight's change up @ down (float64), for Linear ([out, r] @ [r, in]) and conv
    adapters alike (a k-conv into r channels then a 1x1 conv is one k-conv with weight up @ down)."""
    up2 = np.asarray(up, np.float64).reshape(up.shape[0], -1)
    down2 = np.asarray(down, np.float64).reshape(down.shape[0], -1)
    return (up2 @ down2).reshape(tuple(weight_shape))


# ---- locating layers ------------------------------------------------------------------------

ADAPTABLE = (Linear, ConvNd)


def lora_layers(net: nn.Cell) -> List[Tuple[str, nn.Cell]]:
    return [(path, cell) for path, cell in cells_with_paths(net) if isinstance(cell, _Adapted)]


def select_targets(net: nn.Cell, targets: Union[str, Sequence[str]]) -> List[str]:
    """Paths of the plain Linear / Conv layers matched by the patterns, in module order."""
    patterns = [targets] if isinstance(targets, str) else list(targets)
    if not patterns:
        raise ValueError("apply_lora needs at least one target pattern")
    adapted = [path for path, _ in lora_layers(net)]
    layers = [path for path, cell in cells_with_paths(net)  # not the adapted layers nor their adapters
              if isinstance(cell, ADAPTABLE) and not isinstance(cell, _Adapted)
              and not any(path.startswith(p + ".") for p in adapted)]
    chosen, unmatched = [], []
    for pattern in patterns:
        hits = [path for path in layers if fnmatch.fnmatchcase(path, pattern)]
        if not hits:
            unmatched.append(pattern)
        chosen.extend(hits)
    if unmatched:
        already = [p for p in adapted if any(fnmatch.fnmatchcase(p, u) for u in unmatched)]
        hint = f" (already adapted: {already[:3]})" if already else ""
        raise ValueError(f"LoRA target pattern(s) {unmatched} match no Linear or Conv layer{hint}; "
                         f"layer paths look like {layers[:3]}")
    order = {path: i for i, path in enumerate(layers)}
    return sorted(set(chosen), key=order.__getitem__)


# ---- the plan -------------------------------------------------------------------------------

def _is_declared(p) -> bool:
    """True while the parameter has no data yet (declared under declare_only())."""
    return bool(getattr(p, "has_init", False))


def adapt_family(family, lora_cfg, seed: int, dropout: float = None) -> List[str]:
    """model.lora's adapters on the family's net: the layers lora_cfg.targets names, else the
    family's declared LoRA targets; returns the adapted paths. `dropout` overrides lora_cfg's
    (sampling builds the adapters without it)."""
    targets = list(lora_cfg.targets) or list(family.spec.lora_targets)
    if not targets:
        raise WeightsError(f"model.lora.targets: family {family.name} has no default LoRA targets; name the "
                           "Linear / Conv layers to adapt (module-path patterns)")
    return apply_lora(family.net, lora_cfg.rank, lora_cfg.alpha or lora_cfg.rank, targets,
                      lora_cfg.dropout if dropout is None else dropout, seed=seed, style=lora_cfg.style)


def apply_lora(net: nn.Cell, rank: int, alpha: float, targets: Union[str, Sequence[str]], dropout: float = 0.0,
               seed: int = 0, style: str = "peft") -> List[str]:
    """Adapt the Linear / Conv2d / Conv3d layers matched by `targets`, freeze everything else;
    returns the adapted paths.

    On a materialized net the new adapters are filled as `materialize(net, seed)` would fill them
    (in the base weight's dtype); on a declared net they stay declared until `materialize`."""
    if int(rank) != rank or rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if style not in STYLES:
        raise ValueError(f"LoRA style {style!r}: expected one of {STYLES}")
    paths = select_targets(net, targets)
    for path in paths:
        base = cell_at(net, path)
        declared = _is_declared(base.weight)
        if declared:
            with declare_only():
                layer = lora_layer(base, rank, alpha, dropout, style)
        else:
            layer = lora_layer(base, rank, alpha, dropout, style)
        replace_cell(net, path, layer)
        if not declared:
            for attr in ADAPTER_ATTRS:
                p = getattr(layer, attr).weight
                value = Tensor(init_value(p, p.name, seed))
                p.set_data(value if base.weight.dtype == ms.float32 else value.astype(base.weight.dtype))
    adapters = set(id(p) for p in adapter_params(net))
    for _, p in named_params(net):
        p.requires_grad = id(p) in adapters
    return paths


@contextmanager
def adapters_disabled(net: nn.Cell):
    """Within it the net computes as its base (every adapter skipped), e.g. the frozen reference of
    a preference stage. A graph compiled within it keeps the base path, one compiled outside keeps
    the adapters: call each compiled function always inside, or always outside."""
    layers = [layer for _, layer in lora_layers(net)]
    for layer in layers:
        layer.enabled = False
    try:
        yield net
    finally:
        for layer in layers:
            layer.enabled = True


def adapter_params(net: nn.Cell) -> List:
    return [getattr(layer, attr).weight for _, layer in lora_layers(net) for attr in ADAPTER_ATTRS]


def adapter_names(net: nn.Cell) -> List[str]:
    """`<module path>.lora_down.weight`, `<module path>.lora_up.weight` per adapted layer, in order."""
    return [f"{path}.{attr}.weight" for path, _ in lora_layers(net) for attr in ADAPTER_ATTRS]


def _write(p, array: np.ndarray) -> None:
    """Overwrite a parameter's value in place, so graphs already compiled with ms.jit see it
    (set_data swaps the tensor and leaves them on the old one). CPU has no bf16 Assign kernel:
    bf16 parameters are swapped, and a compiled graph using them must be compiled again."""
    value = Tensor(np.asarray(array, np.float32))
    if p.dtype == ms.bfloat16:
        p.set_data(value.astype(ms.bfloat16))
    else:
        ops.assign(p, value if p.dtype == ms.float32 else value.astype(p.dtype))


def _fp32(p) -> np.ndarray:
    return (p.astype(ms.float32) if p.dtype != ms.float32 else p).asnumpy().astype(np.float32)


def released_order(net: nn.Cell) -> List[str]:
    """The adapter names as lora_diffusion saves them (T2V-Turbo's unet_lora.pt): an unnamed list of
    [up, down] per adapted layer in module order; entry i of such a file is the name at i."""
    return [f"{path}.{attr}.weight" for path, _ in lora_layers(net) for attr in ("lora_up", "lora_down")]


def lora_state(net: nn.Cell) -> Dict[str, np.ndarray]:
    """{name: fp32 array} of the adapters only (what a LoRA checkpoint holds)."""
    return {name: _fp32(p) for name, p in zip(adapter_names(net), adapter_params(net))}


def load_lora(net: nn.Cell, arrays: Dict[str, np.ndarray], strict: bool = True, source: str = "LoRA weights") -> None:
    """Copy adapter arrays into the net (in each adapter's dtype). A shape mismatch always fails;
    missing or unexpected adapter names fail when strict."""
    names, params = adapter_names(net), adapter_params(net)
    if not names:
        raise WeightsError("the net has no LoRA adapters: call apply_lora first")
    missing = [n for n in names if n not in arrays]
    unexpected = sorted(set(arrays) - set(names))
    mismatched = [f"{n}: file {list(np.shape(arrays[n]))} vs model {list(p.shape)}"
                  for n, p in zip(names, params) if n in arrays and tuple(np.shape(arrays[n])) != tuple(p.shape)]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
    if strict and missing:
        problems.append(f"{len(missing)} adapter(s) missing, e.g. {missing[:5]}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
    if problems:
        raise WeightsError(f"{source} do not match the net's adapters: " + " | ".join(problems))
    for name, p in zip(names, params):
        if name in arrays:
            _write(p, arrays[name])


def merge_lora(net: nn.Cell, unload: bool = False) -> int:
    """Fold W += (alpha/rank) up @ down into every adapted layer's base weight (in fp32, stored
    back in the weight's dtype) and zero up, so the adapters no longer change the output. With
    `unload` each LoRA layer is swapped back for its base layer (holding the merged Parameters):
    the net then has exactly its original (official) parameter names. Returns the number of
    merged layers."""
    layers = lora_layers(net)
    for path, layer in layers:
        if layer.sources is not None or layer.lora_down.sources is not None or layer.lora_up.sources is not None:
            raise ValueError(f"{path} is ZeRO-3 sharded: merge LoRA on an unsharded net")
        if _is_declared(layer.weight):
            raise ValueError(f"{path} is only declared: materialize or load the net before merging")
        w = layer.weight
        delta = lora_delta(_fp32(layer.lora_up.weight), _fp32(layer.lora_down.weight), w.shape)
        _write(w, _fp32(w).astype(np.float64) + layer.scale * delta)
        _write(layer.lora_up.weight, np.zeros(layer.lora_up.weight.shape, np.float32))
        if unload:
            replace_cell(net, path, layer.base_cell)
    return len(layers)


def describe(net: nn.Cell) -> Dict[str, int]:
    """Adapted layer count and trainable / frozen element counts (for logs)."""
    trainable = sum(int(np.prod(p.shape)) for _, p in named_params(net) if p.requires_grad)
    total = sum(int(np.prod(p.shape)) for _, p in named_params(net))
    return {"layers": len(lora_layers(net)), "trainable": trainable, "frozen": total - trainable}


__all__ = ["LoRALinear", "LoRAConv2d", "LoRAConv3d", "STYLES", "lora_delta", "apply_lora", "adapters_disabled",
           "lora_state", "load_lora", "merge_lora", "lora_layers", "adapter_names", "adapter_params",
           "released_order", "select_targets", "describe"]
