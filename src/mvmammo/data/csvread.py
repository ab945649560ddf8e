"""Reading a user's CSV file with failures that name the file and the line (empty file, not UTF-8, ragged rows).

pandas reports these as ``EmptyDataError: No columns to parse from file`` or a ``UnicodeDecodeError`` with a
byte offset and no file name; a user needs the file, the line and what to do.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from mvmammo.errors import MvError


class CsvError(MvError, ValueError):
    """A CSV file that cannot be read as a table; the message names the file (and the line where known)."""


def decode_utf8(path: Path, data: bytes) -> str:
    """The file's text; a byte sequence that is not UTF-8 is an error naming its line (1-based)."""
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark (Excel's 'CSV UTF-8') is not part of a name
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CsvError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                       "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)") from None


def read_csv(path: str | Path, *, sniff: bool = False, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` of a UTF-8 file; ``sniff`` guesses the delimiter (tab- or semicolon-separated .txt).

    Raises FileNotFoundError (missing) or :class:`CsvError` (empty, not UTF-8, unparsable), one line each.
    A header without rows is a frame with no rows, not an error: the caller says whether that is allowed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise CsvError(f"{path}: is a folder; expected a CSV file")
    data = path.read_bytes()
    if not data.strip():
        raise CsvError(f"{path}: empty file (no header line, no rows); expected a CSV with a header line")
    text = decode_utf8(path, data)
    if sniff:
        kwargs = {"sep": None, "engine": "python", **kwargs}
    try:
        df = pd.read_csv(io.StringIO(text), **kwargs)
    except pd.errors.EmptyDataError:
        raise CsvError(f"{path}: no header line (only blank lines); expected a CSV with a header line") from None
    except (pd.errors.ParserError, ValueError, TypeError) as exc:
        # pandas names the line itself ("Expected 5 fields in line 7, saw 6"); keep that, add the file.
        msg = " ".join(str(exc).split())
        raise CsvError(f"{path}: not a readable CSV: {msg}; check the quoting and the number of fields per line") \
            from None
    if "index_col" not in kwargs and not isinstance(df.index, pd.RangeIndex):
        # pandas silently turns the leading fields into an index when the first data line has more fields
        # than the header: every column would then be shifted.
        raise CsvError(f"{path}: line 2 has more fields than the header line ({len(df.columns)} names); check the "
                       "delimiter, the quoting and trailing commas")
    return df
