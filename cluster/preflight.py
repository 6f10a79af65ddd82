"""The first step of every submitted job: can the cluster's ``python`` run shardtune at all?

A Ray job runs its entrypoint with whatever ``python`` the head's environment finds. A head
started outside the project's environment has one without torch, and the job would die with a
raw ``ModuleNotFoundError`` traceback. ``python -m cluster.preflight`` runs first instead: it
uses the standard library only (and old syntax, for an old Python), imports nothing heavy
(``importlib.util.find_spec`` looks the packages up without importing them), and on a missing
package or a too-old Python prints one line starting with ``MARKER`` and exits with
``EXIT_CODE``. ``shardtune submit --wait`` and ``shardtune jobs status`` turn that exit into a
one-line error (cluster/jobs.py).
"""

import configparser
import importlib.util
import os
import re
import sys

EXIT_CODE = 78  # EX_CONFIG (sysexits.h): the job's environment is wrong, not the job
MARKER = "shardtune preflight:"
ADVICE = ("submit with submit.pip=true (installs setup.cfg's dependencies for the job), use a "
          "cluster image with shardtune's dependencies (cluster/Dockerfile), or start the head "
          "with the project's Python (.venv/bin/ray start --head … with .venv/bin first on "
          "PATH)")
SETUP_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "setup.cfg")
# Import names of setup.cfg's distributions where they are not the distribution's name.
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "hydra-core": "hydra"}
# Without setup.cfg (an installed shardtune): what every verb imports first.
CORE = ["torch", "transformers", "peft", "ray", "hydra-core", "omegaconf", "pyarrow"]


def requirements(setup_cfg=SETUP_CFG):
    """(distribution names of install_requires, minimum Python) from setup.cfg."""
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        return list(CORE), (3, 11)
    options = parser["options"]
    names = []
    for line in options.get("install_requires", "").splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(match.group(1))
    version = re.search(r">=\s*(\d+)\.(\d+)", options.get("python_requires", ""))
    return names, (int(version.group(1)), int(version.group(2))) if version else (3, 11)


def import_name(distribution):
    name = distribution.lower()
    return IMPORT_NAMES.get(name, name.replace("-", "_").replace(".", "_"))


def problem(setup_cfg=SETUP_CFG):
    """What keeps this Python from running shardtune, in words, or None."""
    names, minimum = requirements(setup_cfg)
    where = f"the cluster's Python ({sys.executable or 'python'}, " \
            f"{'.'.join(map(str, sys.version_info[:3]))})"
    if tuple(sys.version_info[:2]) < minimum:
        return f"{where} is older than shardtune needs (>= {minimum[0]}.{minimum[1]})"
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(import_name(name)) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(import_name(name))
    if not missing:
        return None
    listed = ", ".join(missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6
                                       else "")
    return f"{where} lacks shardtune's dependencies: {listed}"


def main():
    found = problem()
    if found is None:
        return 0
    print(f"{MARKER} {found}; {ADVICE}", file=sys.stderr, flush=True)
    return EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
