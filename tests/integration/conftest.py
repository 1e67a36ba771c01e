"""Fixtures shared by the integration tests that need more than a real service."""

from __future__ import annotations

import pytest

from muscipula import incidents, services
from tests.integration import limits_service


@pytest.fixture
def chatty(monkeypatch):
    """The test-only `chatty` service (limits_service) registered, with its incident name."""
    monkeypatch.setitem(services.MODULES, "chatty", "tests.integration.limits_service")
    monkeypatch.setitem(incidents.REGISTRY, limits_service.INCIDENT,
                        incidents.Spec(("event", "tag", "reason"), "test only"))
