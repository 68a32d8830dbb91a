"""NATS header blocks read: a lenient one-message parser and a bulk parser.

A header block is what follows ``HPUB``/``HMSG`` on the wire::

    NATS/1.0[ status]\\r\\n
    key: value\\r\\n
    ...
    \\r\\n

Capture keeps blocks as raw bytes (cheap on the hot path) and splits them later, all at
once, with :func:`parse_blocks` — numpy over one joined buffer instead of a Python loop per
message. :func:`parse_block` is the one-message reference (used for handler events) and the
two must agree; the property tests check that.

Blocks are built in :mod:`evtkit.capture.envelope`. Parsing never raises: lines without a
colon are skipped and reported as malformed, keys keep
their case (lookups of known names are case-insensitive), the first occurrence of a repeated
key wins for known names, values are stripped of blanks, and bytes that are not UTF-8 are
replaced with U+FFFD.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import cast

import numpy as np
import pyarrow as pa

from ._arrow import POOL, cores

STATUS_LINE = b"NATS/1.0"
CRLF = b"\r\n"

# Header names evtkit understands, lower case; the bulk parser extracts these as columns.
KNOWN = (
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "ce-datacontenttype",
    "ce-correlationid",
    "ce-causationid",
    "traceparent",
    "content-type",
    "evtkit-replay-of",
)
# The headers that have their own columns in frames; any other header is kept in a dict.
CLOUDEVENTS = frozenset(KNOWN[:9]) | {"evtkit-replay-of"}
REPLAY_OF = "evtkit-replay-of"
"""Header a replayed message carries: the id of the event it replays."""


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    """One header block, split: all headers in order, plus how many lines were malformed."""

    headers: dict[str, str]
    malformed: int

    def get(self, name: str) -> str | None:
        """First value of header ``name`` (lower case; matched ASCII-case-insensitively)."""
        for key, value in self.headers.items():
            if header_name(key) == name:
                return value
        return None


def header_name(key: str) -> str:
    """A header name for matching: ASCII letters lower-cased, anything else as is.

    (Unicode case folding would let e.g. a Kelvin sign stand in for ``k``.)
    """
    return key.lower() if key.isascii() else key


def parse_block(block: bytes | None) -> ParsedBlock:
    """Split one header block; never raises (see the module docstring for the rules)."""
    if not block:
        return ParsedBlock({}, 0)
    headers: dict[str, str] = {}
    malformed = 0
    for line in block.split(CRLF)[1:]:
        if not line:
            continue
        key, colon, value = line.partition(b":")
        if not colon:
            malformed += 1
            continue
        name = key.decode("utf-8", "replace")
        if name not in headers:
            headers[name] = value.strip(b" \t").decode("utf-8", "replace")
    return ParsedBlock(headers, malformed)


@dataclass(slots=True)
class ParsedBlocks:
    """Many header blocks, split at once.

    Attributes:
        known: for each name in :data:`KNOWN`, a string array with one entry per block
            (null where the block has no such header).
        lines: number of well-formed header lines per block.
        extra: number of those lines whose name is not in :data:`CLOUDEVENTS`.
        malformed: number of lines without a colon per block.
    """

    known: dict[str, pa.Array]
    lines: np.ndarray
    extra: np.ndarray
    malformed: np.ndarray


def parse_blocks(blocks: Sequence[bytes | None], chunk: int = 5_000) -> ParsedBlocks:
    """Split many header blocks at once; the values agree with :func:`parse_block`."""
    _, raw, offsets = joined(blocks)
    return parse_joined(raw, offsets, chunk)


def joined(values: Sequence[bytes | None]
           ) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray, np.ndarray]:
    """Python ``bytes`` (``None``: missing) as a binary Arrow array over one buffer that
    ``bytes.join`` made; that buffer as numpy bytes, with :data:`_PAD` zero bytes before
    and after the values (so the parser can read 8 bytes at any position); and where each
    value starts in it (``n + 1`` offsets).

    One join is faster than Arrow's builder, and the memory comes from the C allocator,
    which hands out fresh pages faster than Arrow's pool does on Linux with transparent
    huge pages."""
    n = len(values)
    missing = sum(v is None for v in values) if not isinstance(values, list) \
        else values.count(None)
    present = cast(Sequence[bytes], values) if not missing else \
        [b"" if v is None else v for v in values]
    data = b"".join(chain((_PAD_BYTES,), present, (_PAD_BYTES,)))
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    np.cumsum(np.fromiter(map(len, present), np.int64, n), out=offsets[1:])
    offsets += _PAD
    valid = None
    if missing:
        mask = np.fromiter((v is not None for v in values), bool, n)
        valid = pa.py_buffer(np.packbits(mask, bitorder="little"))
    raw = np.frombuffer(data, np.uint8)
    if offsets[-1] >= 2**31:  # more than 2 GiB: binary chunks (rare; copied)
        step = max(1, n * 2**30 // int(offsets[-1]))
        chunks = [pa.array(values[i:i + step], pa.binary()) for i in range(0, n, step)]
        return pa.chunked_array(chunks, pa.binary()), raw, offsets
    buffers = [valid, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), n, buffers, null_count=missing), raw, offsets


def parse_joined(raw: np.ndarray, offsets: np.ndarray, chunk: int = 5_000) -> ParsedBlocks:
    """:func:`parse_blocks` of the blocks ``raw[offsets[i]:offsets[i + 1]]`` (``raw`` with
    :data:`_PAD` zero bytes before the first and after the last), in chunks of ``chunk``
    blocks so the temporary arrays stay small (and in the CPU's caches); chunks go to as
    many threads as this process has cores, up to 4 (numpy and Arrow let go of the GIL)."""
    n = len(offsets) - 1
    words = _words(raw)
    counts = np.zeros((3, n), np.int64)  # lines, known lines, malformed (chunks: own columns)

    def parse(lo: int) -> pa.Array:  # the chunk's values, name after name
        return _parse_range(raw, words, offsets, lo, min(lo + chunk, n), counts)

    workers = min(cores(), 4, n // (4 * chunk))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(parse, range(0, n, chunk)))
    else:
        parts = [parse(lo) for lo in range(0, n, chunk)]
    known = {}
    for k, name in enumerate(KNOWN):
        pieces = [p.slice(k * (len(p) // len(KNOWN)), len(p) // len(KNOWN)) for p in parts]
        known[name] = decoded(pa.concat_arrays(pieces, memory_pool=POOL)) if pieces else \
            pa.nulls(0, pa.large_string())
    return ParsedBlocks(known, counts[0], counts[0] - counts[1], counts[2])


_PAD = 8  # zero bytes before and after the joined buffer, so 8-byte reads never fall off
_PAD_BYTES = bytes(_PAD)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _words(buf: bytes | np.ndarray) -> np.ndarray:
    """``words[i]`` is the little-endian uint64 made of bytes ``i .. i+7`` (a zero-copy,
    overlapping, unaligned view: numpy reads 8 bytes at any offset in one gather)."""
    return np.ndarray((len(buf) - 7,), "<u8", buffer=buf, strides=(1,))


def _lower8(w: np.ndarray) -> np.ndarray:
    """ASCII-lower-case the 8 bytes of each uint64 at once (SWAR: no byte loops)."""
    low7 = w & np.uint64(0x7F7F7F7F7F7F7F7F)
    above_z = low7 + np.uint64(0x2525252525252525)  # high bit set where byte > 'Z'
    from_a = low7 + np.uint64(0x3F3F3F3F3F3F3F3F)  # high bit set where byte >= 'A'
    upper = ~w & (from_a ^ above_z) & np.uint64(0x8080808080808080)
    return w | (upper >> np.uint64(2))


def _split_key(words: np.ndarray, start: np.ndarray, stop: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each key ``buf[start:stop]`` as (first 8 bytes, last 8 bytes, length), lower-cased,
    bytes outside the key zeroed. Equal for equal keys; exact for keys up to 16 bytes."""
    length = stop - start
    short = np.minimum(length, 8).astype(np.uint64)
    keep_low = np.where(short == 8, _ONES, (np.uint64(1) << (short * np.uint64(8))) - np.uint64(1))
    head = _lower8(words[start]) & keep_low
    drop = np.where(short == 8, np.uint64(0), np.uint64(64) - short * np.uint64(8))
    tail = _lower8(words[stop - 8]) & ~((np.uint64(1) << drop) - np.uint64(1))
    return head, tail, length


def _name_keys() -> list[tuple[int, int, int, np.ndarray]]:
    """(first, last, length, middle bytes) of each known name, as _split_key sees it."""
    out = []
    for name in KNOWN:
        raw = name.encode()
        words = _words(bytes(_PAD) + raw + bytes(_PAD))
        head, tail, _ = _split_key(words, np.array([_PAD]), np.array([_PAD + len(raw)]))
        out.append((int(head[0]), int(tail[0]), len(raw), np.frombuffer(raw[8:-8], np.uint8)))
    return out


_KEYS = _name_keys()


def _parse_range(raw: np.ndarray, words: np.ndarray, offsets: np.ndarray, lo: int, hi: int,
                 counts: np.ndarray) -> pa.Array:
    """Blocks ``lo .. hi-1``: their lines, colons and known names, found with numpy; the
    values of the known names (for each name, one per block, null where absent).

    A block's first line is its status line; lines end at a CRLF inside the block or at
    the block's end (blocks follow one another in ``raw`` without separators)."""
    starts, ends = offsets[lo:hi], offsets[lo + 1:hi + 1]
    size = hi - lo
    c0, c1 = int(starts[0]), int(ends[-1])
    if c1 == c0:
        return pa.nulls(len(KNOWN) * size, pa.large_binary())
    newline = np.flatnonzero(raw[c0 + 1:c1] == 10) + c0  # positions of the CR before each LF
    crlf = newline[raw[newline] == 13]
    full = np.flatnonzero(ends > starts)  # blocks with bytes (others have no lines)
    last = ends[full]
    split = last[(raw[last - 1] == 13) & (raw[last] == 10)] - 1
    if len(split):  # a CR ending one block and an LF starting the next are no CRLF
        crlf = crlf[~np.isin(crlf, split)]
    # Line boundaries in order: block ends before a CRLF at the same place (it starts the
    # next block); after a CRLF the next line starts 2 bytes on, after a block end at once.
    bounds = np.concatenate((last, crlf))
    order = np.argsort(bounds, kind="stable")
    stop = bounds[order]
    after_end = order < len(last)
    begin = np.empty_like(stop)
    begin[0] = c0
    begin[1:] = stop[:-1] + np.where(after_end[:-1], 0, 2)
    # A block's lines follow the end of the one before: count the ends passed.
    passed = np.zeros(len(stop), np.int64)
    np.cumsum(after_end[:-1], out=passed[1:])
    owner = full[passed]
    status = np.ones(len(stop), bool)
    status[1:] = after_end[:-1]
    keep = ~status & (stop > begin)  # not a status line, not empty
    begin, stop, owner = begin[keep], stop[keep], owner[keep]
    colons = np.flatnonzero(raw[c0:c1] == 58) + c0
    first = np.searchsorted(colons, begin)
    colon = colons[np.minimum(first, len(colons) - 1)] if len(colons) else stop
    ok = (first < len(colons)) & (colon < stop)
    counts[2, lo:hi] += np.bincount(owner[~ok], minlength=size)
    begin, stop, owner, colon = begin[ok], stop[ok], owner[ok], colon[ok]
    counts[0, lo:hi] += np.bincount(owner, minlength=size)

    head, tail, key_len = _split_key(words, begin, colon)
    slot = np.full((len(KNOWN), size), -1, np.int64)
    for k, (name, (want_head, want_tail, length, middle)) in enumerate(
        zip(KNOWN, _KEYS, strict=True)
    ):
        cand = np.flatnonzero(head == np.uint64(want_head))
        if not len(cand):
            continue
        cand = cand[(tail[cand] == np.uint64(want_tail)) & (key_len[cand] == length)]
        if len(middle) and len(cand):
            window = raw[begin[cand, None] + 8 + np.arange(len(middle))]
            window = window + ((window >= 65) & (window <= 90)) * np.uint8(32)
            cand = cand[(window == middle).all(axis=1)]
        if not len(cand):
            continue
        whose = owner[cand]
        if name in CLOUDEVENTS:
            counts[1, lo:hi] += np.bincount(whose, minlength=size)
        # Lines are in order, so an owner's first candidate is its first occurrence
        # (assigned last, it wins).
        slot[k, whose[::-1]] = cand[::-1]
    # One Arrow array of the chunk cut into segments: ..., value, gap, value, ... (zero
    # copy), the values trimmed of blanks; one take picks each name's value per block.
    lines = slot[slot >= 0]
    value_start, value_stop = colon + 1, stop.copy()
    value_start[lines], value_stop[lines] = _trimmed(raw, value_start[lines], stop[lines])
    points = np.empty(2 * len(begin) + 2, np.int64)
    points[0], points[-1] = 0, len(raw)
    points[1:-1:2], points[2:-1:2] = value_start, value_stop
    segments = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(points) - 1, [None, pa.py_buffer(points), pa.py_buffer(raw)])
    flat = slot.ravel()
    return segments.take(pa.array(2 * flat + 1, mask=flat < 0))


def _trimmed(raw: np.ndarray, start: np.ndarray, stop: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """``[start, stop)`` without leading and trailing blanks (space, tab); after the first
    look, only the values that moved are looked at again (usually: one space after the
    colon)."""
    start, stop = start.copy(), stop.copy()
    for edge, step, at in ((start, 1, 0), (stop, -1, -1)):
        rows = np.flatnonzero(_BLANK[raw[edge + at]] & (start < stop))
        while len(rows):
            edge[rows] += step
            rows = rows[_BLANK[raw[edge[rows] + at]] & (start[rows] < stop[rows])]
    return start, stop


_LARGE_TEXT = pa.large_string()
_BLANK = np.zeros(256, bool)
_BLANK[[9, 32]] = True


def decoded(arr: pa.Array, kind: pa.DataType = _LARGE_TEXT) -> pa.Array:
    """Binary to ``kind`` (string or large string); invalid UTF-8 is replaced with U+FFFD,
    like ``bytes.decode(errors="replace")``."""
    try:
        return arr.cast(kind)
    except pa.ArrowInvalid:
        return pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in arr.to_pylist()],
            type=kind,
        )
