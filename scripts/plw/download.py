"""Download a file and verify it against its git blob id, so a moved branch or truncated file is an error."""

import hashlib
import urllib.request


def git_blob_id(content: bytes) -> str:
    """The id git gives a file's content: sha1 of b'blob <size>\\0' + content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def verify_blob(content: bytes, expected: str, source: str) -> None:
    actual = git_blob_id(content)
    if actual != expected:
        raise ValueError(f"{source}: git blob id {actual} ({len(content)} bytes) does not match the "
                         f"configured git_blob {expected}: the file moved, changed or was truncated")


def fetch(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()
