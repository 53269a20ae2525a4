"""One INFO line per certificate issued: who, which serial, until when, how long it took.

Called once per success from the CreateCertificate handler; with `--log-issuances off` the
handler holds no IssuanceLog at all, and below INFO the call returns before formatting. The
fields also go as `extra=` attributes, so `--log-format json` writes them as their own keys."""

from __future__ import annotations

import logging

from meshca.service.issuance import IssuedChain

LOGGER = "meshca.issuance"


class IssuanceLog:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(LOGGER)

    def __call__(self, issued: IssuedChain, seconds: float) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        not_after = (issued.not_after.isoformat(timespec="seconds").replace("+00:00", "Z")
                     if issued.not_after else "?")
        milliseconds = round(seconds * 1000, 1)
        self._log.info("issued %s serial %s, valid until %s (%.1f ms)", issued.spiffe_id.uri,
                       issued.serial, not_after, milliseconds,
                       extra={"spiffe_id": issued.spiffe_id.uri, "serial": issued.serial,
                              "not_after": not_after, "latency_ms": milliseconds})
