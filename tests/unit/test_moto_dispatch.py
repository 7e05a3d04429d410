"""The sandbox's moto server finds a request's backend once per host, not by listing moto's folders each time."""

from __future__ import annotations

import pytest

from ssmfab.sandbox.moto_ext import install


def test_the_backend_for_a_host_is_found_once_and_stays_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    install()
    install()  # idempotent: one wrapper, not two
    listed: list[int] = []
    real_listing = backends.list_of_moto_modules
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: listed.append(1) or real_listing())
    dispatcher = DomainDispatcherApplication(create_app=lambda backend: None)  # type: ignore[arg-type, return-value]
    host = "ssm.ap-southeast-4.amazonaws.com"  # a host no other test asks about
    assert dispatcher.get_backend_for_host(host) == "ssm"
    assert len(listed) == 1
    for _ in range(5):
        assert dispatcher.get_backend_for_host(host) == "ssm"
    assert len(listed) == 1
    assert dispatcher.get_backend_for_host("moto_api") == "moto_api"
