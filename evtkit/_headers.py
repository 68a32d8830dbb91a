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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    """Split many header blocks at once; the values agree with :func:`parse_block`.

    Work goes in chunks of ``chunk`` blocks so the temporary arrays stay small (and in the
    CPU's caches: smaller chunks measured faster).
    """
    parts = [_parse_chunk(blocks[i : i + chunk]) for i in range(0, len(blocks), chunk)]
    if not parts:
        parts = [_parse_chunk([])]
    return ParsedBlocks(
        known={
            name: pa.concat_arrays([p.known[name] for p in parts]) for name in KNOWN
        },
        lines=np.concatenate([p.lines for p in parts]),
        extra=np.concatenate([p.extra for p in parts]),
        malformed=np.concatenate([p.malformed for p in parts]),
    )


_PAD = 8  # zero bytes before and after the joined buffer, so 8-byte reads never fall off
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _words(buf: bytes) -> np.ndarray:
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


def _parse_chunk(blocks: Sequence[bytes | None]) -> ParsedBlocks:
    """Join the blocks into one buffer and find lines, colons and known names with numpy."""
    n = len(blocks)
    if n == 0:
        none = np.zeros(0, np.int64)
        return ParsedBlocks({k: pa.array([], pa.large_string()) for k in KNOWN}, none, none, none)
    lens = np.array([len(b) if b is not None else -1 for b in blocks], np.int64)
    # Each block is followed by CRLF so no line ever runs from one block into the next.
    buf = b"".join((bytes(_PAD), CRLF.join([b or b"" for b in blocks]), CRLF, bytes(_PAD)))
    block_start = np.full(n, _PAD, np.int64)
    if n > 1:
        np.cumsum(np.maximum(lens, 0)[:-1] + 2, out=block_start[1:])
        block_start[1:] += _PAD
    raw = np.frombuffer(buf, np.uint8)

    newlines = np.flatnonzero(raw == 10)
    ends = newlines[newlines > 0] - 1
    ends = ends[raw[ends] == 13]
    starts = np.empty_like(ends)
    starts[:1] = _PAD
    starts[1:] = ends[:-1] + 2
    # Every block (even an absent one) begins a line exactly at its start: count them.
    begins = np.zeros(len(raw), bool)
    begins[block_start] = True
    owner = np.cumsum(begins[starts]) - 1
    # Drop each block's status line, the empty lines, and the separators between blocks.
    keep = (starts != block_start[owner]) & (ends > starts) & (lens[owner] >= 0)
    starts, ends, owner = starts[keep], ends[keep], owner[keep]

    colons = np.flatnonzero(raw == 58)
    first = np.searchsorted(colons, starts)
    colon = colons[np.minimum(first, len(colons) - 1)] if len(colons) else ends
    ok = (first < len(colons)) & (colon < ends)
    malformed = np.bincount(owner[~ok], minlength=n)
    starts, ends, owner, colon = (a[ok] for a in (starts, ends, owner, colon))

    # One Arrow array of buffer segments: ..., [colon+1, end) is a value, ... (zero copy).
    points = np.empty(2 * len(starts) + 2, np.int64)
    points[0], points[-1] = 0, len(buf)
    points[1:-1] = np.column_stack((colon + 1, ends)).ravel()
    segments = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(points) - 1, [None, pa.py_buffer(points), pa.py_buffer(buf)]
    )

    head, tail, key_len = _split_key(_words(buf), starts, colon)
    slot = np.full((len(KNOWN), n), -1, np.int64)
    known_lines = np.zeros(n, np.int64)
    for k, (name, (want_head, want_tail, length, middle)) in enumerate(
        zip(KNOWN, _KEYS, strict=True)
    ):
        cand = np.flatnonzero(head == np.uint64(want_head))
        cand = cand[(tail[cand] == np.uint64(want_tail)) & (key_len[cand] == length)]
        if len(middle) and len(cand):
            window = raw[starts[cand, None] + 8 + np.arange(len(middle))]
            window = window + ((window >= 65) & (window <= 90)) * np.uint8(32)
            cand = cand[(window == middle).all(axis=1)]
        if name in CLOUDEVENTS:
            known_lines += np.bincount(owner[cand], minlength=n)
        # Lines are in order, so an owner's first candidate is its first occurrence.
        firsts = cand[np.r_[True, owner[cand][1:] != owner[cand][:-1]]] if len(cand) else cand
        slot[k, owner[firsts]] = 2 * firsts + 1
    flat = slot.ravel()
    values = pc.utf8_trim(_text(segments.take(pa.array(flat, mask=flat < 0))), " \t")
    known = {name: values.slice(k * n, n) for k, name in enumerate(KNOWN)}
    lines = np.bincount(owner, minlength=n)
    return ParsedBlocks(known, lines, lines - known_lines, malformed)


def _text(arr: pa.Array) -> pa.Array:
    """Binary to string; invalid UTF-8 is replaced with U+FFFD, like ``bytes.decode``."""
    try:
        return arr.cast(pa.large_string())
    except pa.ArrowInvalid:
        return pa.array(
            [None if v is None else v.decode("utf-8", "replace") for v in arr.to_pylist()],
            type=pa.large_string(),
        )
