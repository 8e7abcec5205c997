"""Errors are handled where they are expected and reported, never swallowed wholesale.

An image that cannot be keyed is embedded without the cache (load_image reports what is
wrong with it); a failure of anything else propagates. A cache write that fails keeps
its error, with the failed ROLLBACK noted on it.
"""

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image

from skagegender.embedding import (
    EmbeddingCache,
    ImageLoadError,
    Outcome,
    item_key,
    load_image,
)
from skagegender.embedding._cache import CacheError
from skagegender.embedding._io import _unsupported_format


def _truncated_png():
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")  # 12 kB: noise does not compress
    return Image.open(io.BytesIO(buffer.getvalue()[:200]))  # lazily decoded


def test_a_damaged_pil_image_is_not_keyed_and_load_image_says_why():
    image = _truncated_png()
    assert item_key(image) is None
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(_truncated_png())


class _BrokenImage:
    """A PIL-like object whose pixels fail for a reason that is not damaged data."""

    mode, size = "RGB", (2, 2)

    def getexif(self):
        return {}

    def tobytes(self):
        raise RuntimeError("a bug, not damaged data")


def test_an_unexpected_error_while_keying_propagates():
    with pytest.raises(RuntimeError, match="a bug"):
        item_key(_BrokenImage())


def test_short_prefixes_are_matched_against_pillow_formats():
    # Pillow's DIB check reads 4 bytes: a shorter prefix is no match, not an error
    assert _unsupported_format(b"") is None
    assert _unsupported_format(b"\x28\x00") is None
    assert _unsupported_format(b"8BPS" + b"\0" * 12) == "PSD"  # a format not read here


def test_an_unexpected_error_in_a_format_check_propagates(monkeypatch):
    def accept(prefix):
        raise RuntimeError("a broken plugin")

    Image.init()
    monkeypatch.setitem(Image.OPEN, "BROKEN", (None, accept))
    with pytest.raises(RuntimeError, match="a broken plugin"):
        _unsupported_format(b"\0" * 16)


class _FailingWrites(sqlite3.Connection):
    """A connection whose INSERTs fail, and the ROLLBACK after them too."""

    def executemany(self, sql, rows):
        raise sqlite3.OperationalError("disk I/O error")

    def execute(self, sql, *args):
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("cannot rollback")
        return super().execute(sql, *args)


def test_a_failed_rollback_is_noted_on_the_error_it_follows(tmp_path, monkeypatch):
    connect = sqlite3.connect
    with EmbeddingCache(tmp_path, "bb", dim=2) as cache:
        cache.close()
        monkeypatch.setattr(sqlite3, "connect",
                            lambda *a, **kw: connect(*a, factory=_FailingWrites, **kw))
        with pytest.raises(CacheError, match="disk I/O error") as info:
            cache.put([("k1", np.ones(2, np.float32), None, Outcome("ok"))])
    cause = info.value.__cause__
    assert isinstance(cause, sqlite3.OperationalError)
    assert any("ROLLBACK that followed failed: cannot rollback" in note
               for note in cause.__notes__)
