"""Before Qt starts on Linux: are the X11/xcb libraries its platform plugin needs there?

Without them Qt aborts with "Could not load the Qt platform plugin xcb", which names no
package. This check names the Debian/Ubuntu packages to install instead (README)."""

from __future__ import annotations

import ctypes.util
import os
import sys

#: shared library (as ctypes.util.find_library names it) -> Debian/Ubuntu package
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-xkb": "libxcb-xkb1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
    "xcb-shape": "libxcb-shape0",
    "xcb-randr": "libxcb-randr0",
    "EGL": "libegl1",
    "fontconfig": "libfontconfig1",
}
#: the README's install line: as root (a fresh container has no sudo) or with sudo
APT_LINE = "apt-get install -y " + " ".join(sorted(set(XCB_LIBRARIES.values())))


def missing_qt_libraries(platform: str | None = None) -> str:
    """'' when Qt can start here, else a message naming the packages to install. Only the
    xcb platform (Linux desktop) needs these; offscreen/wayland/other systems pass."""
    if not sys.platform.startswith("linux"):
        return ""
    platform = platform if platform is not None else os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return ""
    if not platform and os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("DISPLAY"):
        return ""
    missing = sorted({pkg for lib, pkg in XCB_LIBRARIES.items()
                      if ctypes.util.find_library(lib) is None})
    if not missing:
        return ""
    return ("lungviewer: Qt may not be able to open a window: system libraries for its xcb "
            f"platform plugin were not found ({', '.join(missing)}). Install them (as root, "
            f"or with sudo in front) with:\n  apt-get install -y {' '.join(missing)}\n"
            "(or run headless with QT_QPA_PLATFORM=offscreen)")
