"""One skip marker for the tests that launch Horovod, an optional source-built dependency."""

from __future__ import annotations

import pytest

from spark_retrieval.distributed.horovod import require_horovod
from spark_retrieval.errors import MissingDependencyError


def _unavailable_reason() -> str | None:
    try:
        require_horovod()
    except MissingDependencyError as missing:
        return str(missing)
    return None


UNAVAILABLE_REASON = _unavailable_reason()
requires_horovod = pytest.mark.skipif(UNAVAILABLE_REASON is not None, reason=UNAVAILABLE_REASON or "")
