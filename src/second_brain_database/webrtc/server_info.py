"""The ``server`` block of ``ready`` (and, once unified, of ``welcome``):
the package version and the features this deployment supports, so that
SDKs can tell what it offers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from second_brain_database.webrtc.schemas import ServerInfo

BASE_FEATURES = ("resume", "tickets", "calls")


def package_version() -> str:
    try:
        return version("second_brain_database")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"


def server_info() -> ServerInfo:
    return ServerInfo(version=package_version(), features=list(BASE_FEATURES))
