"""One ``prism serve`` subprocess shared by the end-to-end tests, stopped after them.

It serves deployments/two-models-cpu.yaml: the default model, SmolLM2, listed first (the
model a client without ``--model`` picks), and Gemma 3 270M beside it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prism.config import DEPLOYMENTS_DIR
from support.prism_process import ServedPlatform, single_replica_profile, start_prism_serve

TWO_MODELS_PROFILE = DEPLOYMENTS_DIR / "two-models-cpu.yaml"


@pytest.fixture(scope="package")
def served_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedPlatform]:
    profile = single_replica_profile(tmp_path_factory.mktemp("serve"), TWO_MODELS_PROFILE)
    served = start_prism_serve(profile)
    yield served
    status = served.stop()
    assert status == 0, "prism serve did not exit cleanly:\n" + "".join(served.lines[-40:])
