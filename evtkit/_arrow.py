"""Arrow ↔ pandas conversions that make no Python object per row.

- :func:`text`: Arrow strings → pandas ``str`` (Arrow-backed, zero copy where possible).
- :func:`categorical`: text with few distinct values → a categorical, categories sorted.
- :func:`ids`: the id columns of a frame → categoricals that share **one** set of categories
  (ids repeat across rows and across columns: a receive repeats its event's id, a child's
  ``causation_id`` is its parent's ``event_id``, a root's ``correlation_id`` its own id), so a
  large trace keeps each id once plus a 4-byte code per row, and comparing or joining id
  columns — within a frame or across the frames derived from it — compares codes.
- :func:`masked`: Arrow ints / booleans → pandas' nullable arrays, leaving zero pages
  untouched where a column has no missing values or only zeros.
- :func:`positions`: where each value is among keys (the join every analysis needs).
- :func:`filled`: a large result read batch by batch into arrays of its known size, so it
  is never held twice (as Arrow and as pandas).

Id categories are in order of first appearance: sorting millions of ids would cost more
than building the frame. This module imports nothing from evtkit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["POOL", "TEXT", "arrow", "categorical", "codes_dtype", "cores", "dictionary", "filled",
           "id_dtype", "ids", "ids_soon", "masked", "nullable_ints", "positions", "same",
           "same_categories", "share", "text", "to_pandas", "utc_times"]

TEXT = pd.StringDtype(na_value=float("nan"))
"""The pandas ``str`` dtype of text columns and of categories (Arrow-backed)."""


def cores() -> int:
    """Cores this process may run on (the threads evtkit's bulk steps may use)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


POOL = pa.system_memory_pool()
"""Where evtkit's large Arrow temporaries (hash tables, joined values) are allocated: the C
allocator hands out fresh pages several times faster than Arrow's default pool (mimalloc)
on Linux with transparent huge pages, where a first build of a million rows otherwise
spends seconds in the kernel."""


def text(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """An Arrow string (or dictionary-of-string) array as a pandas ``str`` array, without
    Python objects in between."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(pa.large_string())
    return pa.table({"x": values}).to_pandas(types_mapper=pandas_type)["x"].array


def pandas_type(arrow_type: pa.DataType) -> object | None:
    """The pandas dtype evtkit uses for an Arrow type (None: pandas' default)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TEXT
    if pa.types.is_int64(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None


def arrow(values: Any) -> pa.Array:
    """A pandas Series / Index / array of text as one Arrow array (a categorical decoded)."""
    array = values.array if hasattr(values, "array") else values
    if hasattr(array, "_pa_array"):
        return pa.chunked_array(array._pa_array).combine_chunks()
    if isinstance(array, pd.Categorical):
        codes = np.asarray(array.codes)
        return arrow(array.categories).take(pa.array(codes, mask=codes < 0))
    # from_pandas: NaN / None / NA in object columns are missing values, not text
    return pa.array(np.asarray(values, dtype=object), pa.large_string(), from_pandas=True)


def codes_dtype(n: int) -> type[np.signedinteger[Any]]:
    """The integer type pandas keeps the codes of ``n`` categories in (smaller copies)."""
    for kind in (np.int8, np.int16, np.int32):
        if n < np.iinfo(kind).max:
            return kind
    return np.int64


def id_dtype(categories: pd.Index) -> pd.CategoricalDtype:
    """A categorical dtype over ``categories``, which the caller knows are unique and not
    missing (pandas would hash millions of ids once more to check)."""
    fast = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    if fast is None:  # pragma: no cover - a pandas without the private fast path
        return pd.CategoricalDtype(categories)
    return fast(categories, False)


def categorical(values: pa.Array | pa.ChunkedArray) -> pd.Categorical:
    """Arrow text (plain or dictionary-encoded) → a pandas categorical with sorted categories
    and the smallest codes that fit, without a Python object per row. Chunk by chunk (as
    Parquet row groups come), so no temporary is larger than a chunk."""
    chunks = [c if pa.types.is_dictionary(c.type) else pc.dictionary_encode(c, memory_pool=POOL)
              for c in (values.chunks if isinstance(values, pa.ChunkedArray) else [values])]
    chunks = [c if _plain_text(c.dictionary.type) else
              pc.dictionary_encode(c.cast(pa.large_string())) for c in chunks]
    dictionaries = [c.dictionary.cast(pa.large_string()) for c in chunks]
    words = pc.drop_null(pc.unique(pa.chunked_array(dictionaries, pa.large_string())))
    words = words.take(pc.sort_indices(words))
    small = codes_dtype(len(words))
    codes = np.empty(len(values), small)
    at = 0
    for chunk, dictionary in zip(chunks, dictionaries, strict=True):
        where = pc.fill_null(pc.index_in(dictionary, value_set=words), -1).cast(pa.int64())
        mapping = np.append(np.asarray(where), -1).astype(small)  # -1 (missing) stays
        codes[at:at + len(chunk)] = mapping[np.asarray(pc.fill_null(chunk.indices, -1))]
        at += len(chunk)
    categories = pd.Index(text(words), dtype=TEXT)
    return pd.Categorical.from_codes(codes, dtype=id_dtype(categories), validate=False)


def _plain_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def masked(values: pa.Array | pa.ChunkedArray, *, ints: bool
           ) -> pd.arrays.IntegerArray | pd.arrays.BooleanArray:
    """Arrow int64 (``ints``) or booleans → pandas' nullable array, chunk by chunk into one
    numpy array (pandas would join the chunks and copy once more); a mask without missing
    values, or values that are all 0 / False, stay zero pages that are never touched."""
    low, high = pc.min_max(values).values()
    zero = low.as_py() in (0, False) and high.as_py() in (0, False)
    data = np.zeros(len(values), np.int64 if ints else bool)
    mask = np.zeros(len(values), bool)
    at = 0
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        end = at + len(chunk)
        if not zero:
            data[at:end] = chunk.fill_null(0 if ints else False).to_numpy(zero_copy_only=False)
        if chunk.null_count:
            mask[at:end] = chunk.is_null().to_numpy(zero_copy_only=False)
        at = end
    return pd.arrays.IntegerArray(data, mask) if ints else pd.arrays.BooleanArray(data, mask)


def ids(columns: Mapping[str, pa.Array | pa.ChunkedArray]) -> dict[str, pd.Categorical]:
    """Arrow id columns of one frame (plain or dictionary-encoded text, equally long) →
    categoricals sharing one set of categories, in order of first appearance.

    Every distinct id is hashed once: a dictionary-encoded column (as Parquet stores ids)
    only through its dictionary, and a plain row whose value equals the same row of an
    earlier plain column (a publish's ``parent_id`` is its ``event_id``; ``trace_id`` often
    its ``correlation_id``) not at all: it takes that column's code.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    todo: list[pa.Array] = []  # what is hashed, in one pass
    plans: dict[str, list[tuple[Any, ...]]] = {}
    plain: list[tuple[str, pa.Array]] = []
    for name, values in columns.items():
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        if values.null_count == len(values):
            plans[name] = []
        elif all(pa.types.is_dictionary(c.type) for c in chunks):
            plans[name] = [("dict", len(todo) + i, c.indices) for i, c in enumerate(chunks)]
            todo += [c.dictionary.cast(pa.large_string()) for c in chunks]
        else:
            flat = pa.chunked_array(chunks).combine_chunks() if len(chunks) != 1 else chunks[0]
            if pa.types.is_dictionary(flat.type):
                flat = flat.cast(flat.type.value_type)
            flat = flat.cast(pa.large_string())
            plans[name] = _plan_plain(flat, plain, todo)
            plain.append((name, flat))
    if todo:
        encoded = pc.dictionary_encode(pa.chunked_array(todo, pa.large_string()),
                                       memory_pool=POOL)
        # One dictionary for all chunks; but empty inputs have no output chunk, so the
        # codes of each input are cut out of the whole by its length.
        categories = encoded.chunk(0).dictionary if encoded.num_chunks else \
            pa.array([], pa.large_string())
        whole = np.concatenate([np.asarray(pc.fill_null(c.indices, -1))
                                for c in encoded.chunks] or [np.zeros(0, np.int32)])
        ends = np.cumsum([0, *(len(t) for t in todo)])
        found = [whole[ends[i]:ends[i + 1]] for i in range(len(todo))]
    else:
        categories, found = pa.array([], pa.large_string()), []
    dtype = id_dtype(pd.Index(text(categories), dtype=TEXT))
    small = codes_dtype(len(categories))
    out: dict[str, pd.Categorical] = {}
    for name, plan in plans.items():
        codes = _codes(plan, found, out, n, small)
        out[name] = pd.Categorical.from_codes(codes, dtype=dtype, validate=False)
    return out


def ids_soon(columns: Mapping[str, pa.Array | pa.ChunkedArray]
             ) -> Future[dict[str, pd.Categorical]]:
    """:func:`ids` of ``columns``, started now on a thread of its own: Arrow lets go of the
    GIL while it hashes, so the caller gets on with other columns meanwhile."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(ids, columns)
    finally:
        pool.shutdown(wait=False)


def _plan_plain(values: pa.Array, earlier: list[tuple[str, pa.Array]], todo: list[pa.Array]
                ) -> list[tuple[Any, ...]]:
    """How a plain column gets its codes: rows equal to an earlier column's take its codes,
    the rest are hashed (appended to ``todo``)."""
    plan: list[tuple[Any, ...]] = []
    left = pc.is_valid(values)
    for name, other in earlier:
        same = pc.fill_null(pc.and_(left, pc.equal(values, other)), False)
        if pc.any(same).as_py():
            plan.append(("same", name, np.asarray(same)))
            left = pc.and_not(left, same)
    if not plan:
        plan.append(("rows", len(todo), None))
        todo.append(values)
    elif pc.any(left).as_py():
        plan.append(("rows", len(todo), np.asarray(left)))
        todo.append(values.filter(left))
    return plan


def _codes(plan: list[tuple[Any, ...]], found: list[np.ndarray],
           done: Mapping[str, pd.Categorical], n: int, small: type) -> np.ndarray:
    if not plan:  # every value missing: no memory touched (pages of np.full are)
        return np.broadcast_to(small(-1), n)
    if plan[0][0] == "rows" and plan[0][2] is None:  # hashed whole
        return found[plan[0][1]].astype(small, copy=False)
    codes: np.ndarray = np.full(n, -1, small)
    start = 0
    for step, where, rows in plan:
        if step == "dict":
            local = np.asarray(pc.fill_null(rows, -1))
            mapping: np.ndarray = np.append(found[where], -1).astype(small)
            codes[start:start + len(local)] = mapping[local]
            start += len(local)
        elif step == "same":
            codes[rows] = np.asarray(done[where].codes)[rows]
        else:
            codes[rows] = found[where]
    return codes


def same_categories(a: Any, b: Any) -> bool:
    """Whether two categorical dtypes have the same categories in the same order (cheap when
    they are the same object, as for frames derived from one another)."""
    if not (isinstance(a, pd.CategoricalDtype) and isinstance(b, pd.CategoricalDtype)):
        return False
    return a.categories is b.categories or a.categories.equals(b.categories)


def same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """``a == b`` as a numpy bool array (missing: False); two id columns sharing their
    categories compare codes (pandas would first hash every category of both)."""
    if same_categories(a.dtype, b.dtype):
        codes = np.asarray(a.array.codes)
        return (codes == np.asarray(b.array.codes)) & (codes >= 0)
    return np.asarray((a == b).to_numpy(dtype=bool, na_value=False))


def share(columns: Mapping[str, Any]) -> dict[str, pd.Categorical]:
    """pandas id columns (text or categoricals, equally long) → categoricals sharing one set
    of categories; columns that already share one are returned as they are."""
    arrays = {name: pd.Series(values).array for name, values in columns.items()}
    dtypes = [a.dtype for a in arrays.values()]
    if dtypes and all(same_categories(dtypes[0], d) for d in dtypes):
        return {name: a for name, a in arrays.items()}
    return ids({name: dictionary(a) for name, a in arrays.items()})


def dictionary(values: Any) -> pa.Array:
    """pandas text as Arrow: a categorical as a dictionary array over its categories (its
    codes are not decoded), anything else as plain text."""
    if isinstance(values, pd.Categorical):
        codes = np.asarray(values.codes)
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0),
                                              arrow(values.categories))
    return arrow(values)


def positions(values: pd.Series | pd.Index, keys: pd.Series | pd.Index) -> np.ndarray:
    """Where each of ``values`` is in ``keys`` (-1 when absent or missing; the first
    position when a key repeats): int32 while ``keys`` are fewer than 2**31, else int64
    (half the memory for the positions of millions of deliveries).

    Ids sharing categories (a frame and the frames derived from it) are matched by their
    codes; other text by an Arrow hash lookup, several times faster than
    ``Index.get_indexer`` on strings; a categorical ``values`` is looked up once per category.
    """
    small = np.int32 if len(keys) < 2**31 else np.int64
    if isinstance(keys.dtype, pd.CategoricalDtype):
        key_codes = np.asarray(_cat(keys).codes)
        first = np.full(len(keys.dtype.categories) + 1, -1, small)  # last slot: missing
        valid = np.flatnonzero(key_codes >= 0)[::-1]  # reversed: the first position wins
        first[key_codes[valid]] = valid.astype(small)
        if same_categories(values.dtype, keys.dtype):
            return first[np.asarray(_cat(values).codes)]
        category = positions(values, keys.dtype.categories)
        return np.where(category >= 0, first[category], -1)
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = np.asarray(_cat(values).codes)
        where = np.append(positions(values.dtype.categories, keys), small(-1))
        return where[codes]  # code -1 (missing) picks the appended -1
    found = pc.index_in(arrow(values), value_set=arrow(keys), skip_nulls=True)
    return np.asarray(pc.fill_null(found, -1)).astype(small)


def nullable_ints(values: np.ndarray, valid: np.ndarray) -> pd.arrays.IntegerArray:
    """A nullable Int64 array of ``values`` where ``valid``, without Python objects."""
    return pd.arrays.IntegerArray(np.where(valid, values, 0).astype(np.int64), ~valid)


def _cat(values: pd.Series | pd.Index) -> pd.Categorical:
    return values.array if isinstance(values, pd.Series) else values.values


NS_MISSING = np.iinfo(np.int64).min
"""A missing nanosecond time as an int64 (pandas' NaT)."""


def filled(batches: Iterable[pa.RecordBatch], schema: pa.Schema, size: int, *,
           categories: Sequence[str] = (), times: Sequence[str] = ()) -> pd.DataFrame:
    """A result of ``size`` rows, read batch by batch into arrays of that size: only one
    batch is ever held as Arrow beside the pandas columns (a whole result as an Arrow
    table and then as pandas held it twice: a consumer's 33 M deliveries at 100 M events
    were ~5 GB at once). 64-bit integers become pandas' nullable ints, 64-bit floats keep NaN for
    missing values, the text columns named in ``categories`` (few distinct values)
    become categoricals with sorted categories and the smallest codes, the integer (or
    timestamp) columns named in ``times`` UTC timestamps; other columns are kept as Arrow
    chunks and converted at the end. A result with more rows than ``size`` is an error;
    one with fewer gives a shorter frame."""
    columns = {field.name: _Filling.of(field, size, field.name in categories,
                                       field.name in times) for field in schema}
    at = 0
    for batch in batches:
        end = at + batch.num_rows
        if end > size:
            raise ValueError(f"the result has more than the {size:,} rows it was said to have")
        for name, column in columns.items():
            column.put(at, end, batch.column(name))
        at = end
    return pd.DataFrame({name: column.done(at) for name, column in columns.items()},
                        copy=False)


def to_pandas(table: pa.Table, categories: Sequence[str] = (), times: Sequence[str] = ()
            ) -> pd.DataFrame:
    """An engine's Arrow result as pandas, integers kept exact where values are missing
    (nanosecond times do not fit a float), ``categories`` dictionary-encoded by Arrow,
    ``times`` taken as UTC timestamps by Arrow (the same 64 bits: no masked integers to
    convert again). Dictionary columns (DuckDB's ``ENUM``) come as text, or, in
    ``categories``, with the values they hold (an ``ENUM``'s dictionary is its whole type)."""
    for at, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(at, field.name,
                                     table[field.name].cast(field.type.value_type))
    for name in categories:
        at = table.schema.get_field_index(name)
        table = table.set_column(at, name, pc.dictionary_encode(table[name]))
    for name in times:
        at = table.schema.get_field_index(name)
        table = table.set_column(at, name, table[name].cast(pa.timestamp("ns", tz="UTC")))
    return table.to_pandas(types_mapper=_result_type)


def _result_type(arrow_type: pa.DataType) -> object | None:
    """The pandas dtype of an engine result's column of ``arrow_type``: 64-bit integers
    nullable (exact where values are missing), the rest pandas' default."""
    return pd.Int64Dtype() if pa.types.is_int64(arrow_type) else None


def utc_times(ns: np.ndarray) -> pd.arrays.DatetimeArray:
    """int64 nanoseconds (the minimum: NaT) as UTC timestamps over the same memory (pandas'
    public constructors copy them, a consumer's 33 M times 264 MB each)."""
    dtype = pd.DatetimeTZDtype("ns", "UTC")
    fast = getattr(pd.arrays.DatetimeArray, "_simple_new", None)
    if fast is None:  # pragma: no cover - a pandas without the private fast path
        return pd.arrays.DatetimeArray._from_sequence(ns.view("M8[ns]"), dtype=dtype)
    return fast(ns.view("M8[ns]"), dtype=dtype)


class _Filling:
    """One column of :func:`filled` as it is filled (Arrow chunks kept as they come)."""

    def __init__(self, kind: pa.DataType) -> None:
        self.kind, self.chunks = kind, list[pa.Array]()

    @staticmethod
    def of(field: pa.Field, size: int, category: bool, time: bool) -> _Filling:
        kind = field.type
        if category and (_plain_text(kind) or pa.types.is_dictionary(kind)):
            return _Codes(kind, size)
        if time and (pa.types.is_integer(kind) or pa.types.is_timestamp(kind)):
            return _Numbers(kind, np.empty(size, np.int64), NS_MISSING, time=True)
        if pa.types.is_int64(kind):
            return _Numbers(kind, np.empty(size, np.int64), 0, mask=np.empty(size, bool))
        if pa.types.is_float64(kind):
            return _Numbers(kind, np.empty(size, np.float64), np.nan)
        return _Filling(kind)

    def put(self, at: int, end: int, values: pa.Array) -> None:
        # A copy of its own: the columns of a batch an engine hands over may be freed only
        # together, so keeping one column's buffers kept the whole batch (at 100 M events
        # the 33 M flows' ids kept every other column of theirs: ~3 GB).
        self.chunks.append(pa.concat_arrays([values, values.slice(0, 0)]))

    def done(self, n: int) -> Any:
        return to_pandas(pa.table({"x": pa.chunked_array(self.chunks, self.kind)}))["x"].array


class _Numbers(_Filling):
    """Numbers (or nanosecond times) into one numpy array, missing values as ``missing``
    (and in ``mask`` where there is one)."""

    def __init__(self, kind: pa.DataType, data: np.ndarray, missing: Any, *,
                 mask: np.ndarray | None = None, time: bool = False) -> None:
        super().__init__(kind)
        self.data, self.missing, self.mask, self.time = data, missing, mask, time

    def put(self, at: int, end: int, values: pa.Array) -> None:
        if self.time:  # (as the whole-table conversion takes them: integers as ns)
            values = values.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        self.data[at:end] = values.fill_null(self.missing).to_numpy(zero_copy_only=False)
        if self.mask is not None:
            self.mask[at:end] = values.is_null().to_numpy(zero_copy_only=False)

    def done(self, n: int) -> Any:
        data = self.data[:n]
        if self.time:
            return utc_times(data)
        if self.mask is None:
            return data
        return pd.arrays.IntegerArray(data, self.mask[:n])


class _Codes(_Filling):
    """Text with few distinct values → codes into the words met so far (then sorted)."""

    def __init__(self, kind: pa.DataType, size: int) -> None:
        super().__init__(kind)
        self.codes = np.empty(size, np.int32)
        self.words: dict[str, int] = {}

    def put(self, at: int, end: int, values: pa.Array) -> None:
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        indices = np.asarray(pc.fill_null(values.indices.cast(pa.int32()), -1))
        words = values.dictionary.cast(pa.large_string()).to_pylist()
        # Only the words the batch holds (an ENUM's dictionary is every value of its type).
        held = np.zeros(len(words) + 1, bool)
        held[indices] = True
        mapping = np.full(len(words) + 1, -1, np.int32)  # (a missing value's index: -1, last)
        for i in np.flatnonzero(held[:-1]):
            if words[i] is not None:
                mapping[i] = self.words.setdefault(words[i], len(self.words))
        self.codes[at:end] = mapping[indices]

    def done(self, n: int) -> Any:
        words = sorted(self.words)
        rank = np.empty(len(words) + 1, codes_dtype(len(words)))
        rank[[self.words[w] for w in words]] = np.arange(len(words))
        rank[-1] = -1
        categories = pd.Index(text(pa.array(words, pa.large_string())), dtype=TEXT)
        return pd.Categorical.from_codes(rank[self.codes[:n]], dtype=id_dtype(categories),
                                         validate=False)
