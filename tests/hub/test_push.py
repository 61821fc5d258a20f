"""ResilientHubApi against a real loopback Hub server: permanent errors, replays of failed uploads."""

from __future__ import annotations

import pytest


def test_permanent_hub_errors_are_not_retried_and_replays_count_once(hub, tmp_path):
    from trl_aem.hub.push import ResilientHubApi

    api = ResilientHubApi(retries=3, backoff=0.0, sleep=lambda s: None)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "weights.txt").write_text("w")
    hub.fail(10, status=403)  # a forbidden repository: retrying cannot help
    with pytest.warns(RuntimeWarning, match="not transient"):
        assert api.upload_folder(repo_id="tester/forbidden", folder_path=folder, path_in_repo="checkpoint-1") is None
    assert api.stats.retries == 0 and api.stats.failures == 1 and api.pending_failures == [str(folder)]
    other = tmp_path / "ckpt2"
    other.mkdir()
    (other / "weights.txt").write_text("v")
    with pytest.warns(RuntimeWarning, match="not transient"):  # the queued first folder is replayed once, silently
        api.upload_folder(repo_id="tester/forbidden", folder_path=other, path_in_repo="checkpoint-2")
    assert api.stats.retries == 0 and api.stats.failures == 2  # one per folder, however often it is replayed
    assert sorted(api.pending_failures) == sorted([str(folder), str(other)])
    hub.fail(0)
    api.flush_failed()
    assert api.pending_failures == []
    assert api.was_uploaded(folder, "checkpoint-1") and api.was_uploaded(other, "checkpoint-2")
