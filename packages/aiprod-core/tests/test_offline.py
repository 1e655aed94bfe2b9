"""The core works with every socket refused, and sets the offline switches."""

import os
import socket

import pytest
import torch
from toy import Toy

from aiprod_core import store
from aiprod_core.offline import OFFLINE_ENV, enforce_offline


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_save_verify_load_without_network(tmp_path, no_network):
    with pytest.raises(AssertionError):
        socket.create_connection(("127.0.0.1", 9))  # the guard itself works
    model = Toy(dim=8)
    folder = model.save_pretrained(tmp_path / "toy")
    store.write_manifest(folder)
    store.verify(folder, force=True)
    loaded = Toy.from_pretrained(folder)
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_offline_switches(monkeypatch):
    for k in OFFLINE_ENV:
        monkeypatch.delenv(k, raising=False)
    enforce_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
