"""Training recipes and the one shared loop (see trainers/loop.py)."""
