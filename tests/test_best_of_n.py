"""bench/best_of_n.py keeps per MR the candidate closest to that MR's references (not the top
beam when a lower one is closer)."""

from __future__ import annotations

from bench.best_of_n import best_candidates


def test_the_candidate_closest_to_the_references_is_kept() -> None:
    candidates = [["Aromi is a place .", "Aromi is a pub in the city centre ."],
                  ["Zizzi is a cheap pub .", "Zizzi is a place that is a pub ."]]
    references = [["Aromi is a pub in the city centre .", "Aromi is a city centre pub ."],
                  ["Zizzi is a cheap pub .", "Zizzi is a pub and it is cheap ."]]
    chosen, chosen_bleu, top_bleu, kept_top = best_candidates(candidates, references)
    assert chosen == ["Aromi is a pub in the city centre .", "Zizzi is a cheap pub ."]
    assert kept_top == 1  # the second MR's top beam was already the closest
    assert chosen_bleu[0] > top_bleu[0] and chosen_bleu[1] == top_bleu[1] > 99.99
