"""Keep credentials out of logs, errors and cube attributes.

Catalog tokens and object-store keys reach srcube through the environment (a Kubernetes Secret,
a CI secret, a user's shell) or ``storage_options``. They can leak back out through URLs that
carry them (``https://user:pass@host``, signed hrefs with ``?sig=...``), through exception texts
of libraries that echo a request, or through options copied into metadata. Everything srcube
prints, raises or writes passes through :func:`redact`:

* userinfo of URLs is replaced by ``***@``;
* values of query parameters that hold credentials (SAS ``sig``/``se``/..., ``X-Amz-*``,
  ``token``, ``key``, ``password``, ...) become ``***``;
* the values of secret environment variables (:data:`SECRET_ENV` and any variable whose name
  ends in ``TOKEN``, ``SECRET``, ``PASSWORD``, ``_KEY``...), wherever they appear, become ``***``;
* so do secret ``storage_options`` values (keys such as ``key``, ``secret``, ``token``) of every
  run this process has prepared: :func:`register` remembers them for the life of the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

#: environment variables whose values are secrets wherever they appear
SECRET_ENV = (
    "SRCUBE_CATALOG_TOKEN", "PC_SDK_SUBSCRIPTION_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
    "GS_SECRET_ACCESS_KEY", "PREFECT_API_KEY", "CDSE_PASSWORD", "TERRASCOPE_PASSWORD",
)
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|_KEY|CREDENTIALS?|CONNECTION_STRING)$", re.I)
#: query parameters that carry credentials (Azure SAS, S3/GCS presigned URLs, OAuth, API keys)
_SECRET_PARAM = re.compile(
    r"^(sig|signature|se|st|sp|sv|sr|spr|skoid|sktid|skt|ske|sks|skv|x-amz-[a-z-]+|x-goog-[a-z-]+|"
    r"token|access_token|id_token|refresh_token|api_key|apikey|key|subscription-key|code|password|secret)$", re.I)
#: storage_options / header keys whose values are secrets
_SECRET_OPTION = re.compile(r"(key|secret|token|password|passwd|credential|authorization|sas|signature)", re.I)

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.-]+)=(?P<value>[^&#\s'\"<>]*)")
#: credentials in HTTP headers as libraries log them ("'Authorization': 'Basic ...'", "Bearer ...")
_AUTH_HEADER = re.compile(r"(?P<head>(authorization|x-api-key|ocp-apim-subscription-key)['\"]?\s*[:=]\s*['\"]?)"
                          r"(?P<value>[^'\",}\n]+)", re.I)
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_MIN_SECRET_LEN = 6  # shorter env values ("1", "true") are too common to mask blindly


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in ``env`` (default ``os.environ``), longest first."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if (k in SECRET_ENV or _SECRET_NAME.search(k)) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


#: secret values handed to srcube other than through the environment (see :func:`register`)
_REGISTERED: set[str] = set()


def register(values: Iterable[str]) -> None:
    """Mask these values (e.g. :func:`option_secrets` of a run's ``storage_options``) in everything
    :func:`redact` cleans from now on, in this process."""
    _REGISTERED.update(v for v in values if len(v) >= _MIN_SECRET_LEN)  # as for env values


def redact(text: str, *, extra: Iterable[str] = ()) -> str:
    """``text`` with credentials replaced by ``***`` (see the module docstring)."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    out = _AUTH_HEADER.sub(lambda m: f"{m['head']}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m['kind']} {MASK}", out)
    out = _QUERY_PARAM.sub(
        lambda m: f"{m['sep']}{m['name']}={MASK}" if _SECRET_PARAM.match(m["name"]) and m["value"] else m[0], out)
    here = {e for e in extra if e}  # given for this text: masked whatever their length
    for value in (*secret_values(), *sorted(here | _REGISTERED, key=len, reverse=True)):
        if len(value) >= _MIN_SECRET_LEN or value in here:
            out = out.replace(value, MASK)
    return out


def redact_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of fsspec ``storage_options`` (or headers) with secret values masked, recursively."""
    result: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            result[key] = redact_options(value)
        elif _SECRET_OPTION.search(str(key)) and value not in (None, "", False):
            result[key] = MASK
        elif isinstance(value, str):
            result[key] = redact(value)
        else:
            result[key] = value
    return result


def option_secrets(options: Mapping[str, Any] | None) -> list[str]:
    """The secret string values in ``storage_options`` (to pass as ``extra`` to :func:`redact`)."""
    found: list[str] = []
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            found += option_secrets(value)
        elif _SECRET_OPTION.search(str(key)) and isinstance(value, str) and value:
            found.append(value)
    return found


class RedactFilter(logging.Filter):
    """A logging filter that redacts each record's message (attach to handlers or loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
        return True


_FILTER = RedactFilter()


#: loggers that may see URLs, headers or options: srcube's own and the I/O libraries below it
LOGGERS = ("srcube", "prefect.flow_runs", "prefect.task_runs", "distributed",
           "pystac_client", "pystac", "urllib3", "requests", "rasterio", "fsspec", "s3fs", "botocore",
           "aiobotocore", "odc", "planetary_computer")


def _registry_lock() -> Any:
    """The lock under which :mod:`logging` adds loggers to its registry (``logging._lock``, private; a dummy lock
    where a Python lacks it: ``list()`` of a dict of strings does not let another thread run meanwhile)."""
    return getattr(logging, "_lock", None) or contextlib.nullcontext()


def install(loggers: Iterable[str] = LOGGERS) -> None:
    """Attach the redacting filter to srcube's loggers (and their existing children) and to the root
    logger's handlers, so records are cleaned whichever logger creates them. Idempotent."""
    roots = tuple(loggers)
    # a snapshot of the logger names: another thread of the process (a second cell on a Dask worker) may create a
    # logger meanwhile, and iterating the registry itself then fails ("dictionary changed size during iteration")
    with _registry_lock():
        known = list(logging.root.manager.loggerDict)
    names = [n for n in known if n in roots or n.startswith(tuple(r + "." for r in roots))]
    for name in {*roots, *names}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
