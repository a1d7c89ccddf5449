"""The driver's client of the control plane's internal API (signed with the job's token)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from chalicelib.services.runner_auth import HEADER, job_token

RETRY_FOR_SECONDS = 120.0  # a restarting control plane is back well within this


class ControlPlaneError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class ControlPlane:
    def __init__(self, kind: str, job_id: str, *, base_url: str | None = None) -> None:
        self.kind, self.job_id = kind, job_id
        self.base_url = (
            base_url or os.environ.get("OPENMAKER_INTERNAL_API_URL", "http://127.0.0.1:10090")
        ).rstrip("/")
        secret_file = Path(os.environ.get("OPENMAKER_RUNNER_SECRET_FILE", ""))
        self._token = job_token(kind, job_id, secret_file.read_bytes().strip())

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        retry_for: float = RETRY_FOR_SECONDS,
    ) -> Any:
        url = f"{self.base_url}/internal/v1/{self.kind}s/{self.job_id}/{path}"
        data = json.dumps(body).encode() if body is not None else None
        deadline = time.monotonic() + retry_for
        delay = 0.2
        while True:
            request = urllib.request.Request(url, data=data, method=method)
            request.add_header(HEADER, self._token)
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                text = exc.read().decode(errors="replace")
                if exc.code < 500 or time.monotonic() > deadline:
                    raise ControlPlaneError(exc.code, text) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def job(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "job")["job"]
        return data

    def report(self, status: str, reason: str | None = None, detail: str | None = None) -> str:
        """Report ``status`` (and its ``detail``, e.g. a tuning's GoalReached); returns the
        status the control plane now holds (a refused report, such as COMPLETE after the user
        stopped the job, returns the current one)."""
        body: dict[str, Any] = {"status": status, "reason": reason}
        if detail is not None:
            body["detail"] = detail
        try:
            answer = self._call("POST", "status", body)
        except ControlPlaneError as exc:
            if exc.status != 409:
                raise
            return str(self.job()["status"])
        return str(answer[self.answer_key]["status"])

    @property
    def answer_key(self) -> str:
        """The resource's key in the answers: ``hyperparameter-tuning`` ->
        ``hyperparameterTuning``."""
        first, *rest = self.kind.split("-")
        return first + "".join(word.capitalize() for word in rest)

    def trial(
        self, payload: dict[str, Any], retry_for: float = RETRY_FOR_SECONDS
    ) -> dict[str, Any]:
        """Create or move one trial of a tuning (upsert by ``number``); the trial as the
        control plane holds it (``trialId``, ``status``, ``logPrefix``, output folders)."""
        answer: dict[str, Any] = self._call("POST", "trials", payload, retry_for=retry_for)[
            "trial"
        ]
        return answer

    def metrics(self, samples: list[dict[str, Any]]) -> None:
        """Monitoring samples; not retried for long (the next round sends them again)."""
        self._call("POST", "metrics", {"samples": samples}, retry_for=2.0)
