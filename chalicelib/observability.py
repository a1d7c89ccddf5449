"""Structured JSON logs (aws-lambda-powertools Logger) carrying request id and appkey."""

from __future__ import annotations

from aws_lambda_powertools import Logger

from chalicelib.config import get_settings

logger = Logger(service="openmaker", level=get_settings().log_level)

SECRET_HEADERS = frozenset({"x-nhn-authorization", "x-easymaker-token", "authorization", "cookie"})
