"""What every launcher shares about training processes: backend names, the failure timeout, exit codes in words."""

from __future__ import annotations

import signal

from .watchdog import EXIT_CODE as WATCHDOG_EXIT_CODE

HOROVOD = "horovod"
TORCH_DISTRIBUTOR = "torch_distributor"
LOCAL = "local"
PROCESS = "process"
BACKENDS = (HOROVOD, TORCH_DISTRIBUTOR, PROCESS, LOCAL)
DEFAULT_FAILURE_TIMEOUT = 300


def describe_exit_code(code: int) -> str:
    """``137`` → ``"code 137: killed by signal 9 (SIGKILL; …)"``; negative codes are signals too (subprocess style)."""
    if code == WATCHDOG_EXIT_CODE:
        return f"code {code}: its watchdog saw no progress for failure_timeout seconds (a hung peer or I/O)"
    number = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else None
    if number is None:
        hint = "an exception in the training function: its traceback is in the output above" if code else "no error"
        return f"code {code}: {hint}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    cause = "; out of memory, or killed from outside" if number == signal.SIGKILL else ""
    return f"code {code}: killed by signal {number} ({name}{cause})"
