"""Write a small real video data set: short mp4 clips of a coloured shape moving over a plain
background, a few still images, and a CSV describing them.

    python tools/make_quickstart_data.py --out data/quickstart --num 256 --seed 0

Layout of --out:
    videos/clip_00000.mp4 ...   H.264 (yuv420p) clips, 24-48 frames, 64x64, 48x80 or 80x48 (h x w)
    images/image_00000.png ...  1-frame samples
    train.csv                   video,caption,num_frames,height,width,fps (paths relative to --out)
    tokenizer.json              a word-level tokenizer of the caption vocabulary (T5's special ids:
                                <pad> 0, </s> 1, <unk> 2) for the tiny text encoder
Captions name what is drawn: "a red circle moving left on a black background".
The set is a pure function of --seed. Encoding uses the ffmpeg binary of the imageio-ffmpeg
package (raw RGB frames through a pipe), so no system ffmpeg is needed."""
import argparse
import csv
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vgen.data.video_writer import write_png, write_video  # noqa: F401  (tests write with them too)

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
           "orange": (245, 140, 30), "purple": (150, 60, 200), "cyan": (40, 210, 220), "white": (240, 240, 240)}
BACKGROUNDS = {"black": (0, 0, 0), "gray": (110, 110, 110), "white": (250, 250, 250)}
SHAPES = ("circle", "square", "diamond")
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)
SIZES = ((64, 64), (48, 80), (80, 48))  # (height, width), even as yuv420p needs
FRAME_COUNTS = (24, 32, 40, 48)
FPS_CHOICES = (24, 30)
CSV_NAME = "train.csv"
TOKENIZER_NAME = "tokenizer.json"
SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as T5's
CSV_COLUMNS = ("video", "caption", "num_frames", "height", "width", "fps")


def draw(shape: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean [h, w] mask of a shape centred at (cy, cx) with half-size r."""
    yy, xx = np.mgrid[0:h, 0:w]
    dy, dx = np.abs(yy + 0.5 - cy), np.abs(xx + 0.5 - cx)
    if shape == "circle":
        return dy * dy + dx * dx <= r * r
    if shape == "square":
        return (dy <= r) & (dx <= r)
    return dy + dx <= r * 1.3  # diamond, a little larger so its area matches the others


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def scene(rng: np.random.Generator):
    """Shape, colour names and their RGB values (the shape never matches the background)."""
    background = pick(rng, list(BACKGROUNDS))
    colour = pick(rng, [c for c in COLOURS if c != background])
    return pick(rng, SHAPES), colour, background


def make_clip(seed: int, index: int):
    """(frames uint8 [T, H, W, 3], fps, caption) of clip `index`."""
    rng = np.random.default_rng([seed, index, 1])
    shape, colour, background = scene(rng)
    direction = pick(rng, list(DIRECTIONS))
    h, w = pick(rng, SIZES)
    t, fps = pick(rng, FRAME_COUNTS), pick(rng, FPS_CHOICES)
    r = float(rng.uniform(min(h, w) / 8, min(h, w) / 5))
    dy, dx = DIRECTIONS[direction]
    # travel across the frame along the motion axis, at a random place across it
    along = np.linspace(r, (h if dy else w) - r, t)
    if (dy or dx) < 0:
        along = along[::-1]
    across = float(rng.uniform(r, (w if dy else h) - r))
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[:] = BACKGROUNDS[background]
    for i in range(t):
        cy, cx = (along[i], across) if dy else (across, along[i])
        frames[i][draw(shape, h, w, cy, cx, r)] = COLOURS[colour]
    return frames, fps, f"a {colour} {shape} moving {direction} on a {background} background"


def make_image(seed: int, index: int):
    """(image uint8 [H, W, 3], caption) of image `index`."""
    rng = np.random.default_rng([seed, index, 2])
    shape, colour, background = scene(rng)
    h, w = pick(rng, SIZES)
    r = float(rng.uniform(min(h, w) / 6, min(h, w) / 3))
    image = np.empty((h, w, 3), np.uint8)
    image[:] = BACKGROUNDS[background]
    image[draw(shape, h, w, rng.uniform(r, h - r), rng.uniform(r, w - r), r)] = COLOURS[colour]
    return image, f"a {colour} {shape} on a {background} background"


def caption_vocabulary():
    """Every word a caption can use."""
    words = {"a", "moving", "on", "background", *COLOURS, *BACKGROUNDS, *SHAPES, *DIRECTIONS}
    return sorted(words)


def write_tokenizer(path: str) -> None:
    """A word-level tokenizer.json (the `tokenizers` package) of the caption vocabulary."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {w: i for i, w in enumerate([*SPECIALS, *caption_vocabulary()])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.save(path)


def build(out: str, num: int, seed: int, num_images: int, workers: int = 2) -> str:
    """Write the set into `out`; returns the CSV path."""
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)

    def one_clip(i):
        frames, fps, caption = make_clip(seed, i)
        name = f"videos/clip_{i:05d}.mp4"
        write_video(os.path.join(out, name), frames, fps)
        return name, caption, len(frames), frames.shape[1], frames.shape[2], fps

    def one_image(i):
        image, caption = make_image(seed, i)
        name = f"images/image_{i:05d}.png"
        write_png(os.path.join(out, name), image)
        return name, caption, 1, image.shape[0], image.shape[1], ""  # an image has no fps

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # ffmpeg runs outside the GIL
        rows = list(pool.map(one_clip, range(num))) + list(pool.map(one_image, range(num_images)))
    csv_path = os.path.join(out, CSV_NAME)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    write_tokenizer(os.path.join(out, TOKENIZER_NAME))
    return csv_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/quickstart", help="output folder")
    p.add_argument("--num", type=int, default=256, help="number of video clips")
    p.add_argument("--images", type=int, default=None, help="number of PNG images (default: num // 16, at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="ffmpeg processes at a time")
    a = p.parse_args(argv)
    num_images = max(1, a.num // 16) if a.images is None else a.images
    t0 = time.perf_counter()
    csv_path = build(a.out, a.num, a.seed, num_images, a.workers)
    print(f"wrote {a.num} clips and {num_images} images, listed in {csv_path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
