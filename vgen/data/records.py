"""Sample lists from CSV files, read with pandas; CSV line numbers kept for error reports
(the header is line 1, the first record line 2)."""
from pathlib import Path
from typing import Sequence

import pandas as pd

from .errors import DataError


def read_csv(path: str, required: Sequence[str]) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CSV file not found: {path} (set data.csv_path to your sample list)")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises many kinds of parse errors
        raise DataError(f"cannot parse CSV {path}: {e}") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"CSV {path} lacks column(s) {missing}; it has {list(df.columns)}. "
                        f"Rename the columns or set data.video_column / data.caption_column.")
    df["_line"] = range(2, len(df) + 2)
    return df


def format_problems(path: str, problems, limit: int = 20) -> str:
    """Problems are (csv line, message) pairs."""
    lines = [f"  line {ln}: {msg}" for ln, msg in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return f"{len(problems)} bad row(s) in {path}:\n" + "\n".join(lines)
