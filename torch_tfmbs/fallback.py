"""Counts of the ops that ran through the CPU fallback (no tfmbs kernel)."""
from . import _C


def fallback_stats():
    """{op name: calls} of every op that ran on the host through the fallback."""
    return dict(_C.fallback_stats())


def reset_fallback_stats():
    _C.reset_fallback_stats()


def set_fallback_mode(mode):
    """"allow" (silent), "warn" (the default: one line per process, at the first
    op that falls back; setting the mode re-arms it) or "error"."""
    _C.set_fallback_mode(mode)


def fallback_mode():
    return _C.fallback_mode()
