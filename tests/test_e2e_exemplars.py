"""bench/e2e_exemplars.py gives each training row the neighbour's reference nearest its own
answer (never a copy of its own dev MR), and each test MR the phrasing its neighbours share."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.e2e_exemplars import closest_to, most_shared, nearest_references, origin, template_of
from bench.neighbour_rerank import Neighbours


def test_copies_of_one_dev_mr_share_an_origin_and_are_left_out_of_its_neighbours() -> None:
    mine = "name[Aromi], eatType[pub], food[French], area[riverside]"
    swapped = "name[Aromi], eatType[coffee shop], food[Indian], area[riverside]"
    other = "name[Cocum], eatType[coffee shop], food[Chinese], area[city centre]"
    assert origin(mine) == origin(swapped) != origin(other)
    pool = pd.Series({swapped: ["Aromi is a coffee shop serving Indian food by the river."],
                      other: ["Cocum is a Chinese coffee shop in the city centre."]})
    neighbours = Neighbours(pool)
    # the swapped copy of the row's own dev MR is its nearest MR (it shares the area);
    # same_origin leaves it out
    assert nearest_references(neighbours, mine, 1, same_origin=False) == [
        ["X-name is a X-eatType serving X-food food by the river."]]
    assert nearest_references(neighbours, mine, 1, same_origin=True) == [
        ["X-name is a X-food X-eatType in the X-area."]]


def test_the_training_exemplar_is_the_reference_nearest_the_rows_own_answer() -> None:
    groups = [["X-name is a X-eatType in the X-area.", "In the X-area you find X-name."],
              ["X-name, a X-eatType, is near X-near."]]
    text, score = closest_to("In the X-area you find X-name, a X-eatType.", groups)
    assert text == "In the X-area you find X-name." and score > 0


def test_the_test_exemplar_is_the_phrasing_the_other_neighbours_share() -> None:
    groups = [["X-name is a X-eatType in the X-area.", "Odd words about X-name here."],
              ["X-name is a X-eatType in the X-area near X-near."],
              ["X-name is a X-eatType in the X-area with X-food food."]]
    text, score = most_shared(groups)
    # the first group's plain phrasing is what the other two MRs' writers also wrote
    assert text == "X-name is a X-eatType in the X-area." and score > 50


def test_a_file_without_mr_and_ref_is_refused_in_one_line(tmp_path) -> None:
    import pytest

    from bench.e2e_exemplars import read_rows

    path = tmp_path / "rows.csv"
    pd.DataFrame({"meaning": ["name[Aromi]"], "ref": ["Aromi."]}).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="rows.csv: no mr column"):
        read_rows(path)


def test_align_refuses_a_folder_no_trained_run_made(tmp_path) -> None:
    folder = tmp_path / "picked" / "eval" / "test"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"run": str(tmp_path / "picked")}))
    with pytest.raises(SystemExit, match="not a trained run"):
        template_of(folder)
