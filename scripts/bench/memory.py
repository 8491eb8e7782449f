"""Peak-memory measurement shared by the benchmarks (Linux /proc; zeros elsewhere)."""

from __future__ import annotations

import contextlib
import ctypes
import gc


def rss_mib(field: str) -> float:
    """A VmRSS/VmHWM line of /proc/self/status, in MiB (0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def settle() -> float:
    """Free what can be freed, reset the peak RSS; return the current RSS (MiB)."""
    gc.collect()
    with contextlib.suppress(OSError):  # hand freed heap memory back to the system
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux)
    return rss_mib("VmRSS:")
