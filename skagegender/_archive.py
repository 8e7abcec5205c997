"""Zip archives from others (model files, .npz feature files), read within caps.

Private helpers free to every subpackage, like :mod:`skagegender._utils`. One set of
rules for every archive the package reads:

- The end record is read before :mod:`zipfile` lists the members (it builds an
  object per member and reads the whole directory at once): more members than the
  caller's ``max_members`` or a directory over :data:`MAX_DIRECTORY_BYTES` is refused
  first. A zip64 archive is refused unless the caller allows it.
- Members named twice, encrypted members and compression methods other than stored
  and deflated are refused before any member is read.
- A member is read only if its declared size is within the caller's limit, and
  reading stops as soon as the actual data exceeds it.

Every refusal is an :class:`ArchiveError` whose message says why, without the file's
name: the caller adds it, in its own words.
"""

import struct
import zipfile
import zlib

#: Largest zip directory read, in bytes: 1 MiB holds over 10,000 entries.
MAX_DIRECTORY_BYTES = 1 << 20

#: Compression methods read: what :mod:`zipfile` and :func:`numpy.savez` write.
COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

#: Everything reading a damaged or odd member can raise: zipfile (BadZipFile: bad
#: CRC; RuntimeError: encrypted; NotImplementedError: compression method), zlib
#: (corrupt deflate), numpy (ValueError, SyntaxError, TypeError: bad .npy header;
#: ValueError: truncated data), the file system.
READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, RuntimeError,
               NotImplementedError, ValueError, SyntaxError, TypeError, EOFError, OSError,
               struct.error)

_END = b"PK\x05\x06"
_END_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive refused; the message says why (the caller names the file)."""


class NotZipError(ArchiveError):
    """The data is not a zip archive, or its end record is damaged."""


def _directory(file, size):
    """``(entries, directory bytes, zip64)`` from the end record, found as zipfile does."""
    tail = min(size, _END_SIZE + 0xFFFF)  # the end record and its comment
    file.seek(size - tail)
    data = file.read(tail)
    at = len(data) - _END_SIZE
    if not (at >= 0 and data[at:at + 4] == _END and data[-2:] == b"\x00\x00"):
        at = data.rfind(_END)
    if at < 0 or len(data) - at < _END_SIZE:
        raise NotZipError("not a zip archive")
    entries, directory = struct.unpack("<HL", data[at + 10:at + 16])
    position = size - tail + at  # of the end record in the file
    if position < 20:
        return entries, directory, False
    file.seek(position - 20)
    if file.read(4) != _ZIP64_LOCATOR:
        return entries, directory, False
    # zipfile reads the zip64 end record just before its locator
    if position < 20 + 56:
        raise NotZipError("a zip64 archive without its zip64 end record")
    file.seek(position - 20 - 56)
    record = file.read(56)
    if record[:4] != _ZIP64_END:
        raise NotZipError("a zip64 archive without its zip64 end record")
    entries, directory = struct.unpack("<QQ", record[32:48])
    return entries, directory, True


def open_zip(file, size, *, max_members, allow_zip64=False):
    """A :class:`zipfile.ZipFile` over ``file``, once its directory is within the caps.

    Parameters
    ----------
    file : seekable binary file object
        The archive (an open file, or :class:`io.BytesIO` over its bytes).
    size : int
        Its length in bytes.
    max_members : int
        Most members accepted.
    allow_zip64 : bool, default=False
        Whether a zip64 archive (needed past 4 GiB or 65,535 members) is read.

    Returns
    -------
    archive : zipfile.ZipFile

    Raises
    ------
    NotZipError
        If ``file`` is not a zip archive or is damaged.
    ArchiveError
        If it is a zip64 archive and ``allow_zip64`` is False, or declares more than
        ``max_members`` members or a directory over :data:`MAX_DIRECTORY_BYTES`.
    """
    entries, directory, zip64 = _directory(file, size)
    if zip64 and not allow_zip64:
        raise ArchiveError("is a zip64 archive, which this kind of file never needs")
    if entries > max_members or directory > MAX_DIRECTORY_BYTES:
        raise ArchiveError(
            f"declares {entries:,} members in a zip directory of {directory:,} bytes; "
            f"at most {max_members:,} members and {MAX_DIRECTORY_BYTES:,} bytes are accepted"
        )
    file.seek(0)
    try:
        return zipfile.ZipFile(file)
    except READ_ERRORS as exc:
        raise NotZipError(f"a damaged zip archive ({exc})") from None


def zip_members(archive, *, max_members):
    """The members of ``archive`` by name, each one that can be read without surprises.

    Parameters
    ----------
    archive : zipfile.ZipFile
        Opened by :func:`open_zip`.
    max_members : int
        Most members accepted (checked again on the directory as read).

    Returns
    -------
    members : dict of str to zipfile.ZipInfo

    Raises
    ------
    ArchiveError
        For too many members, a member name given twice, an encrypted member or a
        compression method other than stored and deflated.
    """
    infos = archive.infolist()
    if len(infos) > max_members:
        raise ArchiveError(f"has {len(infos):,} members; at most {max_members:,} are accepted")
    by_name = {}
    for info in infos:
        if info.filename in by_name:
            raise ArchiveError(f"holds the member {info.filename!r} twice")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"member {info.filename!r} is encrypted")
        if info.compress_type not in COMPRESSIONS:
            raise ArchiveError(
                f"member {info.filename!r} uses compression method {info.compress_type}; "
                "only stored and deflated members are read"
            )
        by_name[info.filename] = info
    return by_name


def check_declared_size(info, limit):
    """Refuse the member ``info`` if it declares more than ``limit`` bytes decompressed."""
    if info.file_size > limit:
        raise ArchiveError(
            f"member {info.filename!r} declares {info.file_size:,} bytes decompressed, "
            f"over the cap of {limit:,}"
        )


def read_member(archive, info, limit):
    """The bytes of member ``info``, refused if its declared or actual size exceeds ``limit``.

    Parameters
    ----------
    archive : zipfile.ZipFile
    info : zipfile.ZipInfo
        From :func:`zip_members`.
    limit : int
        Most bytes read.

    Returns
    -------
    data : bytes

    Raises
    ------
    ArchiveError
        If the member declares or holds more than ``limit`` bytes, holds another
        number of bytes than it declares, or is damaged.
    """
    check_declared_size(info, limit)
    chunks, total = [], 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(_CHUNK):
                total += len(chunk)
                if total > limit:  # zipfile stops at the declared size; never trust that alone
                    raise ArchiveError(
                        f"member {info.filename!r} decompresses to over {limit:,} bytes"
                    )
                chunks.append(chunk)
    except ArchiveError:
        raise
    except READ_ERRORS as exc:
        raise ArchiveError(
            f"member {info.filename!r} is damaged ({type(exc).__name__}: {exc})"
        ) from None
    if total != info.file_size:
        raise ArchiveError(
            f"member {info.filename!r} holds {total:,} bytes, not the "
            f"{info.file_size:,} it declares"
        )
    return b"".join(chunks)
