"""retain_freed_memory takes effect where glibc is the C library and is a clear no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform

import pytest

from mtl_perception.runtime import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_setting() -> None:
    assert memory.retain_freed_memory() is True
    assert memory.retain_freed_memory(64 * 2**20) is True  # idempotent, any size


def test_without_mallopt_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoMallopt:
        def __init__(self, name: str) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert memory.retain_freed_memory() is False


def test_a_refused_setting_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def __init__(self, name: str) -> None:
            self.mallopt = lambda option, value: 0

    monkeypatch.setattr(ctypes, "CDLL", Refusing)
    assert memory.retain_freed_memory() is False
