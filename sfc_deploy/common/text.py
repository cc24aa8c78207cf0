"""Text in and out: files read one way (UTF-8, a byte-order mark tolerated, a one-line error otherwise),
and messages folded to one line."""

from __future__ import annotations

from pathlib import Path

from sfc_deploy.errors import ConfigError


def read_text_file(path: str | Path, *, what: str = "file") -> str:
    """The file's text; a missing file, a folder or bytes that are not UTF-8 fail in one line.

    Args:
        what: what the file is to the user ("CSV", "class list", ...), for the message.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a {what}; pass the {what} itself")
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found; check the path")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the {what} as UTF-8"
        ) from None


def one_line(message: object, limit: int = 600) -> str:
    """A message of any length and line count as one line (a pasted library error included)."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."
