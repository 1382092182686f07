"""One ``prism serve`` subprocess shared by the end-to-end tests, stopped after them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.prism_process import ServedPlatform, single_replica_profile, start_prism_serve


@pytest.fixture(scope="package")
def served_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedPlatform]:
    served = start_prism_serve(single_replica_profile(tmp_path_factory.mktemp("serve")))
    yield served
    status = served.stop()
    assert status == 0, "prism serve did not exit cleanly:\n" + "".join(served.lines[-40:])
