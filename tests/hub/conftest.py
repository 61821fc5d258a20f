"""The loopback Hub server the Hub tests push to and load from (``hub``, one per test module)."""

from __future__ import annotations

import time
import types

import pytest

from ..hub_server import HubServer


def _point_clients_at(server: HubServer, home, patch) -> None:
    """Point huggingface_hub (already imported by conftest, offline) and transformers at ``server``."""
    import huggingface_hub.hf_api
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import constants

    patch.setattr(constants, "ENDPOINT", server.url)
    patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    patch.setattr(constants, "HF_HUB_OFFLINE", False)
    patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    patch.setattr(constants, "HF_HOME", str(home))
    patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    patch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
    patch.setattr(transformers_hub, "_hf_api", None)  # transformers' shared HfApi caches the endpoint
    patch.setattr(huggingface_hub.hf_api.api, "endpoint", server.url)  # so does the one behind file_exists & co.
    for key, value in {"HF_ENDPOINT": server.url, "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "0"}.items():
        patch.setenv(key, value)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub-storage")).start()
    with pytest.MonkeyPatch.context() as patch:
        _point_clients_at(server, tmp_path_factory.mktemp("hf-home"), patch)
        # huggingface_hub's own retries sleep 1, 2, 4, 8, 8 s; keep them (and their count) but not their length
        import huggingface_hub.utils._http as http

        patch.setattr(http, "time", types.SimpleNamespace(sleep=lambda s: time.sleep(min(s, 0.01)), time=time.time))
        yield server
    server.stop()
