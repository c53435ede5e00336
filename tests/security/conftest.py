"""Fixtures of the security tests: throw-away certificates, made once per session."""

from __future__ import annotations

import pytest

from tests.support.mosquitto import TestCerts, make_test_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate it signed."""
    return make_test_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    """Another CA and its client certificate: the broker trusts neither."""
    return make_test_certs(tmp_path_factory.mktemp("foreign-certs"))
