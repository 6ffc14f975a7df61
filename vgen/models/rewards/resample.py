"""Differentiable image resizing as the reward models' preprocessing does it (torchvision's
F.resize on tensors, bicubic with antialias, the default since torchvision 0.17): a separable filter,
so a resize is two matrix products, out = R_h @ image @ R_w^T, with the matrices built once per
(size in, size out) on the host. The gradient reaches the decoded frames through them exactly.

The filter (PyTorch's antialiased upsample kernels, the same as PIL's ImagingResample): the bicubic
kernel with a = -0.5, stretched by the scale s = in / out when shrinking (support 2 s), each output
pixel's weights normalised to sum 1; output pixel i is centred at s (i + 0.5) in input pixels."""
import numpy as np


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float32: the antialiased bicubic resize of one axis."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = _cubic((j - center + 0.5) * inv)
        m[i, lo:hi] = w / w.sum()
    return m.astype(np.float32)


def resize_max_size(height: int, width: int, size: int):
    """HPSv2's ResizeMaxSize: (new h, new w, (top, bottom, left, right) zero padding) that fit the
    longer side to `size` and pad the shorter one, centred, to a size x size square."""
    scale = size / float(max(height, width))
    h, w = (height, width) if scale == 1.0 else (round(height * scale), round(width * scale))
    ph, pw = size - h, size - w
    return h, w, (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)


def resize_min_size(height: int, width: int, size: int):
    """ResizeCropMinSize's resize (the video reward's): (new h, new w) with the shorter side at `size`."""
    scale = size / float(min(height, width))
    return (height, width) if scale == 1.0 else (round(height * scale), round(width * scale))


def padded_resample(n_in: int, n_out: int, pad: tuple) -> np.ndarray:
    """[pad[0] + n_out + pad[1], n_in]: the resize followed by zero rows (zero padding)."""
    m = resample_matrix(n_in, n_out) if n_in != n_out else np.eye(n_in, dtype=np.float32)
    return np.concatenate([np.zeros((pad[0], n_in), np.float32), m, np.zeros((pad[1], n_in), np.float32)])
