"""Writing videos and images with the ffmpeg binary of the imageio-ffmpeg package (raw RGB
frames through a pipe): no system ffmpeg is needed, and the same frames give the same bytes."""
import subprocess

import numpy as np


def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # a dependency of vgen

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(frames: np.ndarray, input_args, output_args, path: str) -> bytes:
    """Pipe uint8 [T, H, W, 3] RGB frames into ffmpeg; path "-": the encoded bytes are returned."""
    _, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           *input_args, "-i", "-", *output_args,
           # no encoder version or timestamps in the file: the same seed gives the same bytes
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", path]
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames, np.uint8).tobytes(),
                          stdout=subprocess.PIPE if path == "-" else subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def write_video(path: str, frames: np.ndarray, fps: float = 24, crf: int = 18) -> None:
    """uint8 [T, H, W, 3] RGB -> H.264 mp4 (yuv420p; H and W must be even)."""
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {frames.shape[1]}x{frames.shape[2]}")
    _ffmpeg(frames, ["-r", str(fps)],
            ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-threads", "1"],
            path)


def write_png(path: str, image: np.ndarray) -> None:
    """uint8 [H, W, 3] RGB -> PNG (lossless)."""
    _ffmpeg(image[None], [], ["-frames:v", "1", "-c:v", "png"], path)


def gif_bytes(frames: np.ndarray, fps: float = 8) -> bytes:
    """uint8 [T, H, W, 3] RGB -> an animated GIF (what TensorBoard shows as a video)."""
    return _ffmpeg(frames, ["-r", str(fps)], ["-f", "gif", "-loop", "0"], "-")
