"""A progress bar on stderr over a benchmark's requests, for the command line."""

from __future__ import annotations

import sys

from tqdm import tqdm


class RequestProgress:
    """Counts requests as they finish; messages print above the bar.

    A context manager: the bar closes on exit. It shows only on a terminal.
    """

    def __init__(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="req", file=sys.stderr, disable=None)

    def message(self, text: str) -> None:
        self._bar.write(text, file=sys.stderr)

    def request_done(self, record: object) -> None:
        self._bar.update()

    def __enter__(self) -> RequestProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()
