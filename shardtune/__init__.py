"""The application: the ``shardtune`` command line, config composition and the console.

``shardtune/compose.py`` turns ``conf/`` plus overrides into the typed job config
(``shardtune/config.py``); ``shardtune/cli.py`` dispatches each verb to the package that owns
it. Everything below is reachable from here; nothing below imports this package.

May import: every other shardtune package (``data`` < ``trainers`` < ``evaluation`` <
``tuning``, ``distill`` < ``cluster`` < ``shardtune``).
"""
