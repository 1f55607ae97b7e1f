"""Apache Beam, imported once with a one-line error when it is missing (the ``beam`` extra).

Beam's import also warns that its BigQuery client libraries are missing; tfbert never uses
BigQuery, so that one notice is dropped while Beam is imported.
"""

from __future__ import annotations

import logging

from tfbert.errors import IncompatibleEnvironmentError


class _BigQueryNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


_notice = _BigQueryNotice()
logging.getLogger().addFilter(_notice)
try:
    import apache_beam  # noqa: F401
except ImportError:
    raise IncompatibleEnvironmentError("Apache Beam is not installed", where="apache-beam",
                                       fix='pip install "tfbert[beam]", or leave --runner out to predict in one '
                                       "process") from None
finally:
    logging.getLogger().removeFilter(_notice)
