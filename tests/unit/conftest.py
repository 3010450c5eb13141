"""Fixtures of the unit tests: a root on the fake runtime and a dir pool, with a tiny image."""

from __future__ import annotations

import pytest

import sysmgr
from sysmgr.drivers.runtime.fake import FakeRuntime


@pytest.fixture
def fake_client(tmp_path):
    """A ``sysmgr.Client`` of a fresh root on the fake runtime and a dir pool ``default``,
    with an image ``img`` (``/sbin/init`` and ``/etc``: enough for the fake runtime); its
    containers' fake inits are forgotten before and after."""
    img = tmp_path / "img"
    (img / "sbin").mkdir(parents=True)
    (img / "sbin" / "init").write_text("#!/bin/sh\n")
    (img / "etc").mkdir()
    FakeRuntime.reset()
    c = sysmgr.Client(root=str(tmp_path / "root"), runtime="fake")
    c.init(storage_driver="dir")
    c.images.import_(str(img), alias="img")
    yield c
    c.close()
    FakeRuntime.reset()
