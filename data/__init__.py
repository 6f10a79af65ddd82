"""Ray Data pipeline: read shards, validate, split, build the label vocabulary, tokenise.

Kept importable without Ray started so that config validation stays cheap.
"""
