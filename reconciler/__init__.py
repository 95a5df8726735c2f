"""fleet: a GitOps reconciler for physical infrastructure."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The version the installed distribution declares (pyproject.toml's), so that a wheel, an
    # image and `fleet --version` never disagree.
    __version__ = version("fleet")
except PackageNotFoundError:  # a source tree on sys.path without an installed distribution
    __version__ = "0+unknown"
