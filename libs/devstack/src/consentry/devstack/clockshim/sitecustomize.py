"""Loaded at interpreter start-up by a child whose PYTHONPATH starts with this directory
(`consentry.devstack.clockstep.ClockStep.env`): steps its wall clock, then runs the
`sitecustomize` this one shadows, if there is one."""

import importlib.machinery
import importlib.util
import os
import sys

from consentry.devstack.clockstep import install_from_environment

try:
    install_from_environment()
except ValueError as error:  # site would print it and go on, on the true clock: refuse
    print(f"clockstep: {error}", file=sys.stderr)
    os._exit(2)

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here]
)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
