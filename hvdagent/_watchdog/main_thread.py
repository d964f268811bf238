"""Where the main thread is: in the user's code (``file:line in function``) or
in a library (TensorFlow, Keras, Horovod, hvdagent, the standard library).

Asked from another thread: the stall watchdog (``hvdagent._watchdog.watchdog``) names
the file and line of a rank that is blocked in user code.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Optional

_LIB_MARKERS = ("site-packages", "dist-packages")


def _is_library(path: str) -> bool:
    if any(m in path for m in _LIB_MARKERS):
        return True
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package's parent
    if path.startswith(os.path.join(here, "hvdagent")) or path.startswith(os.path.join(here, "callbacks")):
        return True
    return path.startswith(sys.base_prefix) or path.startswith("<")


def main_thread_location() -> Optional[str]:
    """``file:line in function`` if the main thread is in user code (not in
    TensorFlow, Keras, Horovod, hvdagent or the standard library), else None."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        path = frame.f_code.co_filename
        stdlib = path.startswith("<") or (path.startswith(sys.base_prefix) and not any(m in path for m in _LIB_MARKERS))
        if not stdlib:  # the innermost frame outside the standard library
            if _is_library(path):
                return None
            return f"{os.path.basename(path)}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return None
