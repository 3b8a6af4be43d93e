"""The Dask client a run computes on: the caller's, or a LocalCluster started for the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: GDAL settings for remote COGs; exported before workers start so they inherit them
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "60",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2",
}


def configure_gdal() -> None:
    for key, value in GDAL_ENV.items():
        os.environ.setdefault(key, value)


#: glibc malloc settings of the LocalCluster's workers, set before they spawn. distributed's
#: default (MALLOC_TRIM_THRESHOLD_=65536) hands freed memory back to the OS at once; the model's
#: large transient activations are then page-faulted in again on every tile. Keeping up to 1 GiB
#: measured 10-15 % faster tiled inference (bench/inference.py, s2-sisr-x4, 2 workers) for about
#: 10 % more resident memory per worker.
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


@contextmanager
def dask_client(client: Any | None = None, *, n_workers: int | None = None) -> Iterator[Any]:
    """Yield ``client`` unchanged, or a client of a LocalCluster that is closed on exit.

    The LocalCluster has one single-threaded worker process per core (at most 4): torch does its
    own threading, and processes keep GDAL and torch from contending for the GIL.
    """
    configure_gdal()
    if client is not None:
        yield client
        return
    import dask
    from distributed import Client, LocalCluster

    n = n_workers or max(1, min(os.cpu_count() or 1, 4))
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    with dask.config.set(environ), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.WARNING) as cluster, Client(cluster) as local:
        yield local
