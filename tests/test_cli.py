"""Start-up failures: one clear line and exit 1, never a traceback, and nothing left open."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from exporter import cli, server
from exporter.config import Config
from exporter.errors import StoreError, StoreUnavailable


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            StoreUnavailable("the store did not commit in time; retry later"), id="store-unavailable"
        ),
        pytest.param(StoreError("the user-id key differs"), id="store-error"),
        pytest.param(OSError(98, "Address already in use"), id="port-taken"),
    ],
)
def test_start_up_errors_are_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, error: Exception
) -> None:
    """Whatever stops the server from starting is reported in one line on stderr, with exit code 1."""

    def fail(config: Config) -> int:
        raise error

    monkeypatch.setattr(server, "serve", fail)
    code = cli.main(["serve", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("flakedrop-telemetry: cannot start: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("writer_process", [True, False], ids=["writer-process", "thread"])
def test_a_store_opened_before_a_failing_app_is_closed(tmp_path: Path, writer_process: bool) -> None:
    """A key mismatch found while wiring the app closes the store: no writer process or thread is left."""
    base = Config(data_dir=str(tmp_path), pin_cpus=False, writer_process=writer_process, port=1)
    from exporter.app import build_service
    from exporter.store import open_store

    store = open_store(base.store_url, writer_process=writer_process)
    build_service(base.replace(user_id_key="first-key-0123456789"), store=store)
    store.close()
    with pytest.raises(StoreError, match="user-id key differs"):
        server.serve_one(base.replace(user_id_key="other-key-0123456789"))
    assert multiprocessing.active_children() == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("store")] == []
