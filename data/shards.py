"""Find and parse data shards: local paths, globs, directories and fsspec URIs.

Parsing is done here, line by line, rather than by pyarrow's bulk readers so that every bad row
can be reported as ``file:line`` (or counted and skipped with ``data.on_error=skip``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import fsspec

from data.config import DataFormat
from data.errors import DataError

_EXTENSIONS = {
    ".jsonl": DataFormat.jsonl,
    ".ndjson": DataFormat.jsonl,
    ".json": DataFormat.json,
    ".csv": DataFormat.csv,
    ".tsv": DataFormat.tsv,
    ".parquet": DataFormat.parquet,
    ".txt": DataFormat.text,
    ".conll": DataFormat.conll,
    ".annotated": DataFormat.conll,
}
_GLOB_CHARS = set("*?[")
DOCSTART = "-DOCSTART-"  # CoNLL-2003: a document boundary, not a token


@dataclass(frozen=True)
class Shard:
    """One input file: ``uri`` for fsspec, ``fragment`` selects a key inside a JSON document."""

    uri: str
    fragment: str | None = None

    @property
    def display(self) -> str:
        name = self.uri[7:] if self.uri.startswith("file://") else self.uri
        return f"{name}#{self.fragment}" if self.fragment else name


def _split_fragment(path: str) -> tuple[str, str | None]:
    """``data.json#train`` → (``data.json``, ``train``), unless the whole name exists."""
    if "#" in path:
        base, frag = path.rsplit("#", 1)
        try:
            whole_exists = fsspec.core.url_to_fs(path)[0].exists(fsspec.core.url_to_fs(path)[1])
        except (ImportError, ValueError):
            whole_exists = False
        if not whole_exists:
            return base, frag or None
    return path, None


def _hidden(path: str, root: str) -> bool:
    """Hidden or underscore names anywhere below ``root`` (.ipynb_checkpoints, _temporary)."""
    relative = os.path.relpath(path, root)
    return any(part.startswith((".", "_")) for part in relative.split(os.sep))


def expand_paths(paths: list[str], key: str, fmt: DataFormat | None = None,
                 hidden: list[str] | None = None) -> list[Shard]:
    """Turn files, directories, globs and URIs into a sorted list of shards.

    Raises a DataError naming the config key for a missing path or an empty directory/glob;
    with ``fmt=auto``, also for a directory none of whose files has a data extension. Files a
    directory holds under hidden or ``_`` names (``_SUCCESS``, ``.part-0.crc``) are not read:
    ``hidden``, when given, collects them so the run can count and report them.
    """
    shards: list[Shard] = []
    for raw in paths:
        base, frag = _split_fragment(raw)
        try:
            fs, root = fsspec.core.url_to_fs(base)
        except (ImportError, ValueError) as exc:
            raise DataError(raw, f"cannot open this location ({exc})", f"check {key}") from exc
        if fs.isdir(root):
            files = [p for p in fs.find(root) if fs.isfile(p)]
            if hidden is not None:
                hidden.extend(sorted(fs.unstrip_protocol(p).removeprefix("file://")
                                     for p in files if _hidden(p, root)))
            found = sorted(p for p in files if not _hidden(p, root))
            if not found:
                raise DataError(raw, "the directory holds no data files", f"check {key}")
            if fmt == DataFormat.auto and not any(_extension(p) in _EXTENSIONS for p in found):
                names = ", ".join(os.path.relpath(p, root) for p in found[:3])
                more = f" and {len(found) - 3} more" if len(found) > 3 else ""
                raise DataError(raw, f"the directory holds no data files ({names}{more}: none "
                                f"ends in {', '.join(sorted(_EXTENSIONS))})",
                                f"check {key}, or set data.format=<format> to read them as one")
        elif fs.exists(root):
            found = [root]
        elif _GLOB_CHARS & set(root):
            found = sorted(p for p in fs.glob(root) if fs.isfile(p))
            if not found:
                raise DataError(raw, "the glob matched no files", f"check {key}")
        else:
            raise DataError(raw, "no such file or directory", f"check {key}")
        shards.extend(Shard(fs.unstrip_protocol(p), frag) for p in found)
    return shards


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def detect_format(shard: Shard, fmt: DataFormat) -> DataFormat:
    if fmt != DataFormat.auto:
        return fmt
    ext = _extension(shard.uri)
    if ext not in _EXTENSIONS:
        raise DataError(
            shard.display, f"cannot tell the format from the extension {ext!r}",
            "set data.format=jsonl|json|csv|tsv|parquet|text|conll",
        )
    return _EXTENSIONS[ext]


def fingerprint(shards: list[Shard]) -> dict[str, Any]:
    """Names, sizes and content hashes of the shards, plus one digest over all of them."""
    files = []
    for shard in shards:
        digest = hashlib.sha256()
        size = 0
        with fsspec.open(shard.uri, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        files.append({"uri": shard.display, "bytes": size, "sha256": digest.hexdigest()})
    return {"sha256": digest_files(files), "files": files}


def digest_files(files: list[dict[str, Any]]) -> str:
    """One digest over a fingerprint's file entries (name, size, content hash), in order."""
    total = hashlib.sha256()
    for entry in files:
        total.update(json.dumps(entry, sort_keys=True).encode())
    return total.hexdigest()


class RowError(DataError):
    """A problem confined to one row: raised, or counted and skipped with on_error=skip."""

    def __reduce__(self):
        return (RowError, (self.where, self.problem, self.hint))


def _decoded_lines(raw: io.BufferedIOBase, where: str) -> Iterator[tuple[int, str | RowError]]:
    """Yield (1-based line number, text), or a RowError naming a line of non-UTF-8 bytes."""
    for number, line in enumerate(raw, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, RowError(
                f"{where}:{number}",
                f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})",
                "re-encode the file as UTF-8",
            )
            continue
        yield number, text[1:] if number == 1 and text.startswith("\ufeff") else text


Row = dict[str, Any]


def iter_records(
    shard: Shard, fmt: DataFormat, columns: list[str] | None, skip_bad: bool = False
) -> Iterator[tuple[str, Row | RowError]]:
    """Yield (``file:line``, raw record) pairs for one shard.

    A malformed row raises a RowError naming its line, or with ``skip_bad`` is yielded in the
    record's place so the caller can count it. Field-level checks happen later.
    """
    for where, record in _records(shard, fmt, columns):
        if isinstance(record, RowError) and not skip_bad:
            raise record
        yield where, record


def _records(shard: Shard, fmt: DataFormat, columns: list[str] | None) -> Iterator[tuple]:
    where = shard.display
    with fsspec.open(shard.uri, "rb") as raw:
        if fmt == DataFormat.parquet:
            yield from _parquet_rows(raw, where)
        elif fmt == DataFormat.jsonl:
            yield from _jsonl_rows(raw, where)
        elif fmt == DataFormat.json:
            yield from _json_document(raw, where, shard.fragment, columns)
        elif fmt in (DataFormat.csv, DataFormat.tsv):
            yield from _delimited_rows(raw, where, "\t" if fmt == DataFormat.tsv else ",", columns)
        elif fmt == DataFormat.text:
            for number, line in _decoded_lines(raw, where):
                if isinstance(line, RowError):
                    yield line.where, line
                elif line.strip():
                    yield f"{where}:{number}", {"text": line.rstrip("\r\n")}
        elif fmt == DataFormat.conll:
            yield from _conll_sentences(raw, where)
        else:  # pragma: no cover - DataFormat is closed
            raise DataError(where, f"unsupported format {fmt}")


def _jsonl_rows(raw: Any, where: str) -> Iterator[tuple[str, Row | RowError]]:
    for number, line in _decoded_lines(raw, where):
        at = f"{where}:{number}"
        if isinstance(line, RowError):
            yield at, line
        elif line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield at, RowError(at, f"malformed JSON ({exc.msg})")
                continue
            if isinstance(record, dict):
                yield at, record
            else:
                yield at, RowError(at, "each JSON line must be an object")


def _parquet_rows(raw: Any, where: str) -> Iterator[tuple[str, Row]]:
    import pyarrow.parquet as pq  # only for parquet shards: JSONL and CSV readers skip it

    try:
        table_file = pq.ParquetFile(raw)
    except Exception as exc:  # pyarrow raises ArrowInvalid with no file name
        raise DataError(where, f"not a readable parquet file ({exc})") from None
    index = 0
    for batch in table_file.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            index += 1
            yield f"{where}:row {index}", record


def _json_document(
    raw: Any, where: str, key: str | None, columns: list[str] | None
) -> Iterator[tuple[str, Row]]:
    text = raw.read()
    try:
        doc = json.loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = text[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where}:{line}", "not valid UTF-8", "re-encode the file as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}:{exc.lineno}", f"malformed JSON ({exc.msg})") from None
    if isinstance(doc, dict):
        if key is None or key not in doc:
            raise DataError(
                where, f"JSON object has no row list under key {key!r}",
                f"append '#<key>' to the path; keys: {sorted(doc)[:10]}",
            )
        doc = doc[key]
    if not isinstance(doc, list):
        raise DataError(where, "expected a JSON list of rows")
    for index, item in enumerate(doc):
        at = f"{where}:row {index + 1}"
        if not isinstance(item, (list, dict)):
            yield at, RowError(at, "each row must be an object or a list")
            continue
        if isinstance(item, list):
            if not columns or len(columns) != len(item):
                yield at, RowError(
                    at, f"list-shaped row of length {len(item)} needs data.columns with as "
                    "many names")
                continue
            item = dict(zip(columns, item, strict=True))
        yield at, item


def _delimited_rows(
    raw: Any, where: str, delimiter: str, columns: list[str] | None
) -> Iterator[tuple[str, Row]]:
    lines = _decoded_lines(raw, where)
    current = [0]
    pending: list[RowError] = []

    def text_lines() -> Iterator[str]:
        for number, line in lines:
            current[0] = number
            if isinstance(line, RowError):
                pending.append(line)
                yield ""
            else:
                yield line

    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    reader = csv.reader(text_lines(), delimiter=delimiter, quoting=quoting)
    header = columns
    try:
        for record in reader:
            while pending:
                bad = pending.pop(0)
                yield bad.where, bad
            if header is None:
                if not record or not any(h.strip() for h in record):
                    continue  # blank lines before the header
                header = [h.strip() for h in record]
                _unique_header(header, f"{where}:{current[0]}")
                continue
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            at = f"{where}:{current[0]}"
            if len(record) != len(header):
                yield at, RowError(
                    at, f"expected {len(header)} fields ({', '.join(header)}), found {len(record)}"
                )
                continue
            yield at, dict(zip(header, record, strict=True))
    except csv.Error as exc:
        raise DataError(f"{where}:{current[0]}", f"malformed CSV ({exc})") from None
    for bad in pending:
        yield bad.where, bad


def _unique_header(header: list[str], where: str) -> None:
    """Two columns of one name: the row dict would keep the last one's value silently."""
    seen: set[str] = set()
    for number, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(where, f"column {name!r} appears twice in the header (again as "
                            f"column {number})", "rename one of them: shardtune would read only "
                            "the last")
        seen.add(name)


def _conll_sentences(raw: Any, where: str) -> Iterator[tuple[str, Row]]:
    """Sentences of ``token<TAB>tag`` lines, split at blank lines. A ``-DOCSTART-`` line is
    CoNLL-2003's document separator: it ends the sentence before it and is no example."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for number, line in _decoded_lines(raw, where):
        if isinstance(line, RowError):
            yield line.where, line
            continue
        if not line.strip() or line.split(None, 1)[0] == DOCSTART:
            if tokens:
                yield f"{where}:{start}", {"tokens": tokens, "tags": tags}
            tokens, tags = [], []
            continue
        parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if len(parts) < 2 or not parts[0]:
            yield f"{where}:{number}", RowError(f"{where}:{number}", "expected 'token<TAB>tag'")
            continue
        if not tokens:
            start = number
        tokens.append(parts[0])
        tags.append(parts[-1].strip())
    if tokens:
        yield f"{where}:{start}", {"tokens": tokens, "tags": tags}


def why_no_rows(shard: Shard, fmt: DataFormat, columns: list[str] | None) -> str | None:
    """Why a file gave no rows: empty, a header line alone, or no rows at all; ``None`` when it
    holds some (then its rows were skipped, split off or sampled away)."""
    try:
        fs, path = fsspec.core.url_to_fs(shard.uri)
        if fs.size(path) == 0:
            return "the file is empty (0 bytes)"
        fmt = detect_format(shard, fmt)
        if any(True for _ in iter_records(shard, fmt, columns, skip_bad=True)):
            return None
        with fs.open(path, "rb") as f:
            blank = not f.read(1 << 20).strip()
    except (OSError, DataError):
        return None
    if fmt in (DataFormat.csv, DataFormat.tsv) and not columns and not blank:
        return "the file has a header line but no rows"
    return "the file holds no rows"
