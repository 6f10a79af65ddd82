"""bench/central_references.py keeps each MR's references most like its others, counts what it
drops, and keeps an MR's only reference."""

from __future__ import annotations

import pandas as pd

from bench.central_references import keep_central


def test_the_odd_reference_goes_and_every_mr_keeps_one() -> None:
    frame = pd.DataFrame({
        "mr": ["a[1]"] * 4 + ["b[2]"],
        "ref": ["X is a pub in the city centre.",
                "Tucked away downtown you will find the pub X.",
                "X is a pub in the centre of the city.",
                "X is a pub in the city centre area.",
                "Y is alone."]})
    kept, counts = keep_central(frame, keep=0.5)
    assert counts == {"rows": 5, "kept": 3, "dropped": 2, "mrs": 2}
    assert "Tucked away downtown you will find the pub X." not in set(kept["ref"])
    assert "Y is alone." in set(kept["ref"])
    assert list(kept.index) == sorted(kept.index)  # file order kept
    everything, counts = keep_central(frame, keep=1.0)
    assert counts["dropped"] == 0 and len(everything) == 5
