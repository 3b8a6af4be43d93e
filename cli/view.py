"""``srcube view CUBE``: the cube on a map page served from 127.0.0.1 (registered on the srcube command line by
:mod:`srcube.cli.commands`; the server and the page are :mod:`srcube.pipeline.view`)."""

from __future__ import annotations

import errno
import signal
import threading
from typing import Annotated

import typer


def view_cmd(
    cube: Annotated[str, typer.Argument(help="path or URL of a complete srcube cube (s3://...: credentials from AWS_* "
                                             "or --storage-option)")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="port on 127.0.0.1 (0: a free one)")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="print the page's URL only; open no browser")
                          ] = False,
    storage_option: Annotated[list[str] | None, typer.Option(help="KEY=VALUE fsspec option of the cube")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Show the cube on a map in the browser: dates, band composites, the clear and consistency layers, a swipe
    between the super-resolved image and the bicubic view of its input; full resolution reads only the tiles in
    view. Served on 127.0.0.1 until Ctrl-C."""
    import webbrowser

    from srcube.cli.commands import _fail, _setup_logging, _shown, _storage_options, console, err_console
    from srcube.pipeline.errors import SrcubeError
    from srcube.pipeline.view.server import ViewServer
    from srcube.pipeline.view.tiles import CubeView

    _setup_logging(verbose)
    try:
        view = CubeView.open(cube, _storage_options(storage_option))  # refused here, before anything is served
    except (SrcubeError, FileNotFoundError) as exc:
        _fail(exc)
        return
    try:
        server = ViewServer(view, port=port)
    except OSError as exc:
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
        _fail(OSError(f"port {port} on 127.0.0.1 {why}: pass another --port, or none for a free one"))
        return
    console.print(_shown(f"srcube view: {server.url}  (Ctrl-C stops it)"), soft_wrap=True)
    console.file.flush()  # the URL is read from a pipe too (scripts, tests)
    if not no_browser:
        webbrowser.open(server.url)
    # Ctrl-C asks the server to stop (from a thread of its own: shutdown() waits for serve_forever to return), rather
    # than raising KeyboardInterrupt, which Python swallows when it lands in a finalizer: the server would go on
    main = threading.current_thread() is threading.main_thread()  # only there can a signal handler be set
    previous = signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
                             ) if main else None
    try:
        server.serve_forever()
        err_console.print("stopped")
    except KeyboardInterrupt:
        err_console.print("stopped")
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
        server.server_close()
