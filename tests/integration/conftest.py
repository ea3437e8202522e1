"""Fixtures the integration suites share (the session's service and channel are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from rewardloop.v1 import admin_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp

TEST_EXPERIMENTS = "t-"


@pytest.fixture
async def admin(channel: grpc.aio.Channel) -> AsyncIterator[admin_pb2_grpc.AdminStub]:
    """The Admin stub; every experiment a test made (named ``t-...``) is stopped and deleted after it,
    so the session's other tests (Assign of every running experiment, the monitor) never see them."""
    stub = admin_pb2_grpc.AdminStub(channel)
    yield stub
    listed = await stub.ListExperiments(xp.ListExperimentsRequest(), timeout=5)
    for experiment in listed.experiments:
        if experiment.source == "api" and experiment.spec.name.startswith(TEST_EXPERIMENTS):
            if experiment.status in (xp.EXPERIMENT_STATUS_RUNNING, xp.EXPERIMENT_STATUS_PAUSED):
                await stub.StopExperiment(xp.StopExperimentRequest(name=experiment.spec.name), timeout=5)
            await stub.DeleteExperiment(xp.ExperimentRequest(name=experiment.spec.name), timeout=5)
