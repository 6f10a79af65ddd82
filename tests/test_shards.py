"""Shard discovery and line-by-line parsing (data/shards.py) plus row checks (no Ray needed).

Every bad row must raise a DataError whose message starts with ``file:line`` so users can fix it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from data.config import DataConfig, DataFormat
from data.errors import ConfigError, DataError
from data.pipeline import split_key
from data.read import _clean
from data.shards import Shard, detect_format, expand_paths, fingerprint, iter_records


def _shard(path: Path, fragment: str | None = None) -> Shard:
    """The shard expand_paths would produce for one local file."""
    (shard,) = expand_paths([str(path)], "data.path")
    return Shard(shard.uri, fragment)


def _read(path: Path, fmt: DataFormat, columns: list[str] | None = None,
          fragment: str | None = None) -> list[tuple[str, dict]]:
    return list(iter_records(_shard(path, fragment), fmt, columns))


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(path=[str(path)], **kw)


# --------------------------------------------------------------------------- expand_paths


def test_expand_single_file_is_a_file_uri_with_plain_display(tmp_path):
    f = _write(tmp_path / "train.jsonl", '{"text": "a"}\n')
    shards = expand_paths([str(f)], "data.path")
    assert shards == [Shard(f"file://{f}")]
    assert shards[0].display == str(f)
    assert shards[0].fragment is None


def test_expand_directory_sorted_and_skips_hidden_and_underscore(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    for name in ["b.jsonl", "a.jsonl", "c.csv", ".hidden.jsonl", "_SUCCESS", "_meta.json"]:
        _write(d / name, "x\n")
    hidden: list[str] = []
    shards = expand_paths([str(d)], "data.path", hidden=hidden)
    assert [Path(s.display).name for s in shards] == ["a.jsonl", "b.jsonl", "c.csv"]
    assert all(s.uri.startswith("file://") for s in shards)
    # not read, but named so the run can count and report them (run_meta, report.md)
    assert hidden == [str(d / ".hidden.jsonl"), str(d / "_SUCCESS"), str(d / "_meta.json")]


def test_expand_directory_recurses_into_subdirectories(tmp_path):
    d = tmp_path / "ds"
    (d / "part2").mkdir(parents=True)
    _write(d / "part1.jsonl", "x\n")
    _write(d / "part2" / "x.jsonl", "x\n")
    shards = expand_paths([str(d)], "data.path")
    assert [s.display for s in shards] == [str(d / "part1.jsonl"), str(d / "part2" / "x.jsonl")]


def test_expand_directory_skips_files_inside_hidden_subdirectories(tmp_path):
    d = tmp_path / "ds"
    (d / ".ipynb_checkpoints").mkdir(parents=True)
    (d / "_temporary").mkdir()
    _write(d / "a.jsonl", "x\n")
    _write(d / ".ipynb_checkpoints" / "a-checkpoint.jsonl", "x\n")
    _write(d / "_temporary" / "part-0.jsonl", "x\n")
    shards = expand_paths([str(d)], "data.path")
    assert [Path(s.display).name for s in shards] == ["a.jsonl"]


def test_expand_glob_matches_sorted_files_only(tmp_path):
    for name in ["s2.jsonl", "s1.jsonl", "s3.csv"]:
        _write(tmp_path / name, "x\n")
    (tmp_path / "s9.jsonl").mkdir()  # a directory matching the glob is not a shard
    shards = expand_paths([str(tmp_path / "s*.jsonl")], "data.path")
    assert [Path(s.display).name for s in shards] == ["s1.jsonl", "s2.jsonl"]


def test_expand_list_keeps_given_order_and_carries_fragment(tmp_path):
    b = _write(tmp_path / "b.jsonl", "x\n")
    a = _write(tmp_path / "a.json", "{}")
    shards = expand_paths([str(b), f"{a}#rows"], "data.path")
    assert shards == [Shard(f"file://{b}"), Shard(f"file://{a}", "rows")]
    assert shards[1].display == f"{a}#rows"


def test_expand_file_uri(tmp_path):
    f = _write(tmp_path / "t.jsonl", "x\n")
    shards = expand_paths([f"file://{f}"], "data.path")
    assert shards == [Shard(f"file://{f}")]
    assert shards[0].display == str(f)


def test_expand_missing_path_names_path_and_key(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="no such file or directory") as info:
        expand_paths([str(missing)], "data.validation_path")
    msg = str(info.value)
    assert msg.startswith(f"{missing}:")
    assert "data.validation_path" in msg
    assert info.value.where == str(missing)


def test_expand_empty_directory(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(DataError, match=r"directory holds no data files.*check data\.path"):
        expand_paths([str(d)], "data.path")


def test_expand_directory_with_only_hidden_files_is_empty(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    _write(d / ".DS_Store", "x")
    _write(d / "_SUCCESS", "")
    with pytest.raises(DataError, match="no data files"):
        expand_paths([str(d)], "data.path")


def test_expand_glob_matching_nothing(tmp_path):
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(DataError, match=r"glob matched no files.*check data\.test_path") as info:
        expand_paths([pattern], "data.test_path")
    assert str(info.value).startswith(pattern)


# --------------------------------------------------------------------------- detect_format


@pytest.mark.parametrize("name, fmt", [
    ("a.jsonl", DataFormat.jsonl), ("a.ndjson", DataFormat.jsonl), ("a.json", DataFormat.json),
    ("a.csv", DataFormat.csv), ("a.tsv", DataFormat.tsv), ("a.parquet", DataFormat.parquet),
    ("a.txt", DataFormat.text), ("a.conll", DataFormat.conll), ("a.annotated", DataFormat.conll),
    ("A.JSONL", DataFormat.jsonl),
])
def test_detect_format_by_extension(name, fmt):
    assert detect_format(Shard(f"file:///d/{name}"), DataFormat.auto) == fmt


def test_detect_format_explicit_wins_over_extension():
    assert detect_format(Shard("file:///d/a.dat"), DataFormat.csv) == DataFormat.csv
    assert detect_format(Shard("file:///d/a.jsonl"), DataFormat.text) == DataFormat.text


def test_detect_format_unknown_extension_suggests_data_format():
    with pytest.raises(DataError, match=r"'\.dat'.*data\.format=") as info:
        detect_format(Shard("file:///d/a.dat"), DataFormat.auto)
    assert str(info.value).startswith("/d/a.dat:")


# --------------------------------------------------------------------------- iter_records


def test_jsonl_skips_blank_lines_and_numbers_lines(tmp_path):
    f = _write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n\n   \n{"text": "b"}\n')
    rows = _read(f, DataFormat.jsonl)
    assert rows == [(f"{f}:1", {"text": "a", "label": 1}), (f"{f}:4", {"text": "b"})]


def test_jsonl_last_line_without_newline_and_crlf(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"text": "a"}\r\n{"text": "b"}')
    assert _read(f, DataFormat.jsonl) == [(f"{f}:1", {"text": "a"}), (f"{f}:2", {"text": "b"})]


def test_json_document_list_of_objects(tmp_path):
    f = _write(tmp_path / "d.json", '[{"text": "a"},\n {"text": "b", "label": "x"}]')
    rows = _read(f, DataFormat.json)
    assert rows == [(f"{f}:row 1", {"text": "a"}), (f"{f}:row 2", {"text": "b", "label": "x"})]


def test_json_document_dict_with_fragment_key(tmp_path):
    f = _write(tmp_path / "d.json", '{"version": 2, "rows": [{"text": "a"}, {"text": "b"}]}')
    rows = _read(f, DataFormat.json, fragment="rows")
    assert [r for _, r in rows] == [{"text": "a"}, {"text": "b"}]
    assert rows[0][0] == f"{f}#rows:row 1"


def test_json_document_fragment_via_expand_paths(tmp_path):
    f = _write(tmp_path / "d.json", '{"train": [{"text": "t"}], "dev": [{"text": "d"}]}')
    (shard,) = expand_paths([f"{f}#dev"], "data.path")
    assert [r for _, r in iter_records(shard, DataFormat.json, None)] == [{"text": "d"}]


def test_json_document_list_rows_mapped_with_columns(tmp_path):
    f = _write(tmp_path / "d.json", '[["hello", "pos"], ["bye", "neg"]]')
    rows = _read(f, DataFormat.json, columns=["text", "label"])
    assert [r for _, r in rows] == [{"text": "hello", "label": "pos"},
                                    {"text": "bye", "label": "neg"}]


def test_json_document_list_rows_without_matching_columns(tmp_path):
    f = _write(tmp_path / "d.json", '[["hello", "pos"], ["bye", "neg", "extra"]]')
    message = r"d\.json:row 1: list-shaped row of length 2.*data\.columns"
    with pytest.raises(DataError, match=message):
        _read(f, DataFormat.json)
    with pytest.raises(DataError, match=r"d\.json:row 2: list-shaped row of length 3"):
        _read(f, DataFormat.json, columns=["text", "label"])


def test_json_document_missing_key_lists_keys(tmp_path):
    f = _write(tmp_path / "d.json", '{"train": [], "meta": {}}')
    with pytest.raises(DataError, match=r"no row list under key 'rows'") as info:
        _read(f, DataFormat.json, fragment="rows")
    assert "keys: ['meta', 'train']" in str(info.value)
    with pytest.raises(DataError, match=r"under key None.*'#<key>'"):
        _read(f, DataFormat.json)


def test_json_document_not_a_list(tmp_path):
    f = _write(tmp_path / "d.json", '{"rows": "oops"}')
    with pytest.raises(DataError, match="expected a JSON list of rows"):
        _read(f, DataFormat.json, fragment="rows")


def test_json_document_malformed_names_line(tmp_path):
    f = _write(tmp_path / "d.json", '[\n{"text": "a"},\n{"text": }\n]')
    with pytest.raises(DataError, match=r"d\.json:3: malformed JSON"):
        _read(f, DataFormat.json)


def test_json_document_non_utf8_names_line(tmp_path):
    f = tmp_path / "d.json"
    f.write_bytes(b'[\n{"text": "a"},\n{"text": "caf\xe9"}\n]')
    with pytest.raises(DataError, match=r"d\.json:3: not valid UTF-8"):
        _read(f, DataFormat.json)


def test_json_document_scalar_rows_raise_data_error(tmp_path):
    f = _write(tmp_path / "d.json", '["some text", "more text"]')
    cfg = _cfg(f)
    with pytest.raises(DataError, match=r"d\.json:row 1"):
        for where, record in iter_records(_shard(f), DataFormat.json, None):
            _clean(where, record, cfg, "causal_lm")


def test_csv_with_header_and_quoted_commas(tmp_path):
    f = _write(tmp_path / "t.csv", 'text , label\n"hello, world",pos\nplain,neg\n')
    rows = _read(f, DataFormat.csv)
    assert rows == [(f"{f}:2", {"text": "hello, world", "label": "pos"}),
                    (f"{f}:3", {"text": "plain", "label": "neg"})]


def test_csv_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes(b"text,label\r\na,1\r\n\r\nb,2\r\n")
    rows = _read(f, DataFormat.csv)
    assert rows == [(f"{f}:2", {"text": "a", "label": "1"}),
                    (f"{f}:4", {"text": "b", "label": "2"})]


@pytest.mark.parametrize("header", ["text,label,text", "text,label, label "])
def test_a_column_named_twice_in_a_csv_header_is_an_error_naming_file_and_column(tmp_path,
                                                                                 header):
    """csv rows become dicts: the last of two same-named columns would win, silently."""
    f = _write(tmp_path / "t.csv", f"\n{header}\nhello,a,bye\n")
    name = header.split(",")[-1].strip()
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}:2: column '{name}' appears twice "
                                        r"in the header \(again as column 3\)"):
        _read(f, DataFormat.csv)


def test_duplicate_names_in_data_columns_are_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.columns.*'text' twice"):
        DataConfig(path=["x.csv"], columns=["text", "label", "text"])


def test_csv_without_header_uses_columns(tmp_path):
    f = _write(tmp_path / "t.csv", "hello,pos\nbye,neg\n")
    rows = _read(f, DataFormat.csv, columns=["text", "label"])
    assert rows == [(f"{f}:1", {"text": "hello", "label": "pos"}),
                    (f"{f}:2", {"text": "bye", "label": "neg"})]


def test_tsv_with_header_keeps_commas_and_quotes_literal(tmp_path):
    f = _write(tmp_path / "t.tsv", 'text\tlabel\nhi, "there"\tpos\n')
    assert _read(f, DataFormat.tsv) == [(f"{f}:2", {"text": 'hi, "there"', "label": "pos"})]


def test_tsv_without_header_uses_columns(tmp_path):
    f = _write(tmp_path / "t.tsv", "a b\t1\nc d\t2\n")
    rows = _read(f, DataFormat.tsv, columns=["text", "label"])
    assert [r for _, r in rows] == [{"text": "a b", "label": "1"}, {"text": "c d", "label": "2"}]
    assert [w for w, _ in rows] == [f"{f}:1", f"{f}:2"]


def test_text_skips_blank_lines_and_strips_newline_only(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"First Citizen:\r\n\n   \n  Before we proceed  \nlast")
    rows = _read(f, DataFormat.text)
    assert rows == [(f"{f}:1", {"text": "First Citizen:"}),
                    (f"{f}:4", {"text": "  Before we proceed  "}),
                    (f"{f}:5", {"text": "last"})]


def test_conll_sentences_split_on_whitespace_only_lines(tmp_path):
    f = _write(tmp_path / "t.conll",
               "EU\tB-ORG\nrejects\tO\n\t\nGerman\tB-MISC\ncall\tO\n  \n\nBritish lamb B-MISC\n")
    rows = _read(f, DataFormat.conll)
    assert rows == [
        (f"{f}:1", {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}),
        (f"{f}:4", {"tokens": ["German", "call"], "tags": ["B-MISC", "O"]}),
        (f"{f}:8", {"tokens": ["British"], "tags": ["B-MISC"]}),
    ]


def test_conll_line_without_tag_names_line(tmp_path):
    f = _write(tmp_path / "t.conll", "EU\tB-ORG\n\nlonely\n")
    with pytest.raises(DataError, match=r"t\.conll:3: expected 'token<TAB>tag'"):
        _read(f, DataFormat.conll)


def test_parquet_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 0]}), f)
    rows = _read(f, DataFormat.parquet)
    assert rows == [(f"{f}:row 1", {"text": "a", "label": 0}),
                    (f"{f}:row 2", {"text": "b", "label": 1}),
                    (f"{f}:row 3", {"text": "c", "label": 0})]


# --------------------------------------------------------------------------- bad input


def test_jsonl_malformed_line_3(tmp_path):
    body = '{"text": "a"}\n{"text": "b"}\n{"text": "c",\n{"text": "d"}\n'
    f = _write(tmp_path / "file.jsonl", body)
    records = iter_records(_shard(f), DataFormat.jsonl, None)
    assert next(records)[0].endswith("file.jsonl:1")  # rows before the bad one still stream
    with pytest.raises(DataError, match=r"file\.jsonl:3: malformed JSON") as info:
        list(records)
    assert info.value.where == f"{f}:3"


def test_jsonl_line_that_is_a_list(tmp_path):
    f = _write(tmp_path / "t.jsonl", '{"text": "a"}\n["a", "b"]\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: each JSON line must be an object"):
        _read(f, DataFormat.jsonl)


def test_jsonl_non_utf8_line_2(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: .*UTF-8") as info:
        _read(f, DataFormat.jsonl)
    assert "0xe9" in str(info.value) and "column 14" in str(info.value)


@pytest.mark.parametrize("fmt, name", [(DataFormat.csv, "t.csv"), (DataFormat.text, "t.txt"),
                                       (DataFormat.conll, "t.conll")])
def test_non_utf8_named_by_line_in_line_formats(tmp_path, fmt, name):
    f = tmp_path / name
    f.write_bytes(b"text\tO\n\xff\xfe\tO\n")
    with pytest.raises(DataError, match=re.escape(name) + r":2: not valid UTF-8"):
        _read(f, fmt, columns=["text"] if fmt == DataFormat.csv else None)


def test_csv_wrong_field_count_names_line(tmp_path):
    f = _write(tmp_path / "t.csv", "text,label\na,1\nb,2,extra\n")
    with pytest.raises(DataError, match=r"t\.csv:3: expected 2 fields \(text, label\), found 3"):
        _read(f, DataFormat.csv)


def test_headerless_tsv_wrong_field_count_names_line(tmp_path):
    f = _write(tmp_path / "t.tsv", "a\t1\nb\n")
    with pytest.raises(DataError, match=r"t\.tsv:2: expected 2 fields"):
        _read(f, DataFormat.tsv, columns=["text", "label"])


def test_non_parquet_file_read_as_parquet(tmp_path):
    pytest.importorskip("pyarrow.parquet")
    f = _write(tmp_path / "fake.parquet", '{"text": "not parquet"}\n')
    with pytest.raises(DataError, match="not a readable parquet file") as info:
        _read(f, DataFormat.parquet)
    assert str(info.value).startswith(f"{f}:")


# --------------------------------------------------------------------------- _clean


def test_clean_maps_text_and_string_label(tmp_path):
    cfg = _cfg(tmp_path / "t.jsonl")
    row = _clean("t.jsonl:1", {"text": "hi", "label": "pos", "x": 1}, cfg, "seq_cls")
    assert row == {"text": "hi", "label": "pos", "_ltype": "str"}


def test_clean_custom_fields(tmp_path):
    cfg = _cfg(tmp_path / "t.jsonl", text_field="body", label_field="y")
    assert _clean("w", {"body": "hi", "y": "a"}, cfg, "seq_cls") == {"text": "hi", "label": "a",
                                                                    "_ltype": "str"}


def test_clean_missing_text_field_names_field_and_hint(tmp_path):
    cfg = _cfg(tmp_path / "t.jsonl", text_field="sentence")
    with pytest.raises(DataError, match=r"^t\.jsonl:7: missing text field 'sentence'") as info:
        _clean("t.jsonl:7", {"text": "hi", "label": 1}, cfg, "seq_cls")
    msg = str(info.value)
    assert "has: text, label" in msg
    assert "data.text_field" in msg


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_clean_empty_text(tmp_path, text):
    with pytest.raises(DataError, match=r"^w:3: empty text in field 'text'"):
        _clean("w:3", {"text": text, "label": "a"}, _cfg(tmp_path / "t.jsonl"), "seq_cls")


@pytest.mark.parametrize("value, type_name", [(5, "int"), (None, "NoneType"), (["a"], "list")])
def test_clean_non_string_text(tmp_path, value, type_name):
    with pytest.raises(DataError, match=rf"text field 'text' is {type_name}, not a string"):
        _clean("w", {"text": value}, _cfg(tmp_path / "t.jsonl"), "causal_lm")


@pytest.mark.parametrize("record", [{"text": "hi"}, {"text": "hi", "label": None},
                                    {"text": "hi", "label": "  "}])
def test_clean_missing_label_for_seq_cls(tmp_path, record):
    with pytest.raises(DataError, match=r"missing or empty label field 'label'.*data\.label_field"):
        _clean("w", record, _cfg(tmp_path / "t.jsonl"), "seq_cls")


def test_chat_data_read_for_a_classifier_says_to_use_task_sft(tmp_path):
    import dataclasses

    from data.chat import ChatSpec

    cfg = dataclasses.replace(_cfg(tmp_path / "t.csv"), name="e2e_nlg",
                              chat=ChatSpec(prompt_template="Describe: {mr}",
                                            completion_field="ref"))
    with pytest.raises(DataError, match=r"label field 'label' \(data.name=e2e_nlg holds chats: "
                                        r"use task=sft\)"):
        _clean("w", {"text": "name[Aromi]", "ref": "Aromi."}, cfg, "seq_cls")


def test_clean_label_not_needed_for_causal_lm(tmp_path):
    assert _clean("w", {"text": "hi"}, _cfg(tmp_path / "t.txt"), "causal_lm") == {"text": "hi"}


@pytest.mark.parametrize("label, expected", [(3, "3"), (3.0, "3"), (0, "0"), (0.0, "0"),
                                             ("3", "3"), ("neg", "neg")])
def test_clean_label_normalised_to_string(tmp_path, label, expected):
    row = _clean("w", {"text": "hi", "label": label}, _cfg(tmp_path / "t.jsonl"), "seq_cls")
    assert row["label"] == expected


@pytest.mark.parametrize("label, kind", [("1", "str"), (1, "int"), (1.0, "int"),
                                         (True, "bool"), (False, "bool")])
def test_clean_keeps_the_label_value_type_of_typed_formats(tmp_path, label, kind):
    """``1`` and ``"1"`` both become the class "1": the type is kept so a column mixing them is
    refused (data/labels.py); CSV/TSV hold text only and keep none."""
    cfg = _cfg(tmp_path / "t.jsonl")
    row = _clean("w", {"text": "hi", "label": label}, cfg, "seq_cls")
    assert row["label"] == str(int(label) if isinstance(label, float) else label)
    assert row["_ltype"] == kind
    assert "_ltype" not in _clean("w", {"text": "hi", "label": "1"}, cfg, "seq_cls", typed=False)


@pytest.mark.parametrize("label", [2.5, float("nan"), ["a"], {"a": 1}])
def test_clean_rejects_non_class_labels(tmp_path, label):
    with pytest.raises(DataError, match="is not a class name or integer id"):
        _clean("w", {"text": "hi", "label": label}, _cfg(tmp_path / "t.jsonl"), "seq_cls")


def test_clean_metadata_fields_copied_as_strings(tmp_path):
    cfg = _cfg(tmp_path / "t.jsonl", metadata_fields=["source", "id", "missing", "none"])
    record = {"text": "hi", "label": 1, "source": "web", "id": 42, "none": None}
    assert _clean("w", record, cfg, "seq_cls") == {
        "text": "hi", "label": "1", "_ltype": "int", "meta_source": "web", "meta_id": "42",
        "meta_missing": "", "meta_none": "",
    }


def test_metadata_counts_count_a_pattern_in_a_field(tmp_path):
    from data.config import MetadataCount

    cfg = _cfg(tmp_path / "t.jsonl", metadata_fields=["source"],
               metadata_counts={"attributes": MetadataCount(field="mr", pattern=r"\[")})
    record = {"text": "hi", "label": 1, "source": "web", "mr": "name[A], food[B], area[C]"}
    row = _clean("w", record, cfg, "seq_cls")
    assert row["meta_source"] == "web" and row["meta_attributes"] == "3"
    assert _clean("w", {**record, "mr": "none"}, cfg, "seq_cls")["meta_attributes"] == "0"
    with pytest.raises(DataError, match=r"^f\.csv:7: data\.metadata_counts\.attributes counts "
                                        r"field 'mr', which is missing, not text"):
        _clean("f.csv:7", {"text": "hi", "label": 1}, cfg, "seq_cls")


@pytest.mark.parametrize(("counts", "key"), [
    ({"a": {"field": "mr", "pattern": "["}}, "data.metadata_counts.a.pattern"),
    ({"a": {"field": "mr"}}, "data.metadata_counts.a"),
    ({"source": {"field": "mr", "pattern": "x"}}, "data.metadata_counts.source"),
])
def test_metadata_counts_bad_config_names_the_key(tmp_path, counts, key):
    from data.config import MetadataCount

    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path / "t.jsonl", metadata_fields=["source"],
             metadata_counts={k: MetadataCount(**v) for k, v in counts.items()})
    assert err.value.key == key, str(err.value)


def test_clean_token_cls(tmp_path):
    cfg = _cfg(tmp_path / "t.conll")
    row = _clean("w", {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}, cfg, "token_cls")
    assert row == {"text": "EU rejects", "tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}
    with pytest.raises(DataError, match="tag count that differs"):
        _clean("w", {"tokens": ["EU", "rejects"], "tags": ["B-ORG"]}, cfg, "token_cls")


def test_clean_on_parsed_csv_rows(tmp_path):
    f = _write(tmp_path / "t.csv", "body,y\nhello,1\n")
    cfg = _cfg(f, text_field="text")
    (where, record), = _read(f, DataFormat.csv)
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}:2: missing text field 'text' "
                                        r"\(has: body, y\)"):
        _clean(where, record, cfg, "seq_cls")


# --------------------------------------------------------------------------- split_key


def test_split_key_deterministic_in_unit_interval_and_text_dependent():
    texts = [f"example {i}" for i in range(200)] + ["", "ünïcödé ✓"]
    keys = [split_key(t) for t in texts]
    assert keys == [split_key(t) for t in texts]
    assert all(isinstance(k, float) and 0.0 <= k < 1.0 for k in keys)
    assert len(set(keys)) == len(keys)
    # roughly uniform: a 0.1 hold-out takes roughly a tenth
    assert 5 <= sum(k < 0.1 for k in keys[:200]) <= 40


def test_split_key_is_the_same_in_every_process():
    """A run, its resume and every Ray worker must hold out the same examples: no per-process
    salt (Python's hash() of a str has one)."""
    import json
    import os
    import subprocess
    import sys

    texts = ["hello", "hello ", "ünïcödé ✓", "", "x" * 10_000]
    code = ("import json, sys; from data.pipeline import split_key; "
            "print(json.dumps([split_key(t) for t in json.loads(sys.argv[1])]))")
    root = Path(__file__).resolve().parent.parent
    other = subprocess.run([sys.executable, "-c", code, json.dumps(texts)], cwd=root, check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(other.stdout) == [split_key(t) for t in texts]
    assert split_key("hello") != split_key("hello ")


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3])
def test_hold_out_is_about_val_fraction_and_ignores_shard_order(fraction):
    """The held-out share is val_fraction within sampling error, and which examples are held out
    depends on their text alone: the same set whatever the shards' order or boundaries."""
    import numpy as np

    from data.pipeline import _keep_split

    texts = [f"ticket {i}: my card was charged twice" for i in range(20_000)]
    share = sum(split_key(t) < fraction for t in texts) / len(texts)
    assert abs(share - fraction) < 4 * (fraction * (1 - fraction) / len(texts)) ** 0.5

    def held_out(shards: list[list[str]]) -> list[str]:
        out = []
        for shard in shards:
            batch = {"text": np.array(shard, dtype=object),
                     "_error": np.array([""] * len(shard), dtype=object)}
            out += list(_keep_split(batch, want_val=True, fraction=fraction)["text"])
        return sorted(out)

    order = held_out([texts])
    assert order == held_out([texts[::-1]])
    assert order == held_out([texts[13_000:], texts[:13_000]])
    assert order == held_out([texts[i::7] for i in range(7)])


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_per_file_bytes_and_sha(tmp_path):
    a = _write(tmp_path / "a.jsonl", '{"text": "a"}\n')
    b = tmp_path / "b.bin"
    b.write_bytes(bytes(range(256)) * 10)
    fp = fingerprint(expand_paths([str(a), str(b)], "data.path"))
    assert fp["files"] == [
        {"uri": str(a), "bytes": a.stat().st_size,
         "sha256": hashlib.sha256(a.read_bytes()).hexdigest()},
        {"uri": str(b), "bytes": 2560, "sha256": hashlib.sha256(b.read_bytes()).hexdigest()},
    ]
    assert re.fullmatch(r"[0-9a-f]{64}", fp["sha256"])


def test_fingerprint_same_content_same_digest_one_byte_changes_it(tmp_path):
    f = _write(tmp_path / "a.jsonl", '{"text": "a"}\n')
    shards = expand_paths([str(f)], "data.path")
    first = fingerprint(shards)
    assert fingerprint(shards) == first
    # identical bytes elsewhere hash the same per file
    g = tmp_path / "copy.jsonl"
    g.write_bytes(f.read_bytes())
    other = fingerprint(expand_paths([str(g)], "data.path"))
    assert other["files"][0]["sha256"] == first["files"][0]["sha256"]
    # one changed byte (same size) changes both the file hash and the overall digest
    f.write_bytes(f.read_bytes().replace(b"a", b"b", 1))
    changed = fingerprint(shards)
    assert changed["files"][0]["bytes"] == first["files"][0]["bytes"]
    assert changed["files"][0]["sha256"] != first["files"][0]["sha256"]
    assert changed["sha256"] != first["sha256"]


def test_fingerprint_depends_on_shard_order(tmp_path):
    a = _write(tmp_path / "a.txt", "a\n")
    b = _write(tmp_path / "b.txt", "b\n")
    ab = fingerprint(expand_paths([str(a), str(b)], "data.path"))
    ba = fingerprint(expand_paths([str(b), str(a)], "data.path"))
    assert ab["sha256"] != ba["sha256"]
    assert fingerprint([])["files"] == []


def test_byte_order_mark_is_dropped_from_csv_header_and_jsonl(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufefftext,label\nhi,1\n".encode())
    assert _read(f, DataFormat.csv)[0][1] == {"text": "hi", "label": "1"}
    g = tmp_path / "bom.jsonl"
    g.write_bytes('\ufeff{"text": "hi", "label": "a"}\n'.encode())
    assert _read(g, DataFormat.jsonl)[0][1]["text"] == "hi"


def test_blank_lines_before_csv_header_are_skipped(tmp_path):
    f = _write(tmp_path / "t.csv", "\ntext,label\nhi,1\n")
    assert _read(f, DataFormat.csv) == [(f"{f}:3", {"text": "hi", "label": "1"})]


def test_glob_and_fragment_characters_in_real_file_names(tmp_path):
    odd = tmp_path / "br[1]"
    odd.mkdir()
    f = _write(odd / "x.jsonl", '{"text": "a"}\n')
    assert [s.uri for s in expand_paths([str(f)], "data.path")][0].endswith("br[1]/x.jsonl")
    h = _write(tmp_path / "a#1.jsonl", '{"text": "a"}\n')
    shard = expand_paths([str(h)], "data.path")[0]
    assert shard.fragment is None and shard.uri.endswith("a#1.jsonl")


def test_unpaired_surrogate_is_a_data_error(tmp_path):
    f = _write(tmp_path / "s.jsonl", '{"text": "a\\ud800b", "label": "x"}\n')
    cfg = _cfg(f)
    with pytest.raises(DataError, match=r"s\.jsonl:1.*surrogate"):
        for where, record in iter_records(_shard(f), DataFormat.jsonl, None):
            _clean(where, record, cfg, "seq_cls")
