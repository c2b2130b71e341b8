"""The errors a user of ldm_lite can fix: each names the argument, what it got and what it expects.

    UsageError(ValueError)              a wrong value (range, shape, count, a missing condition, ...)
    UsageTypeError(UsageError, TypeError)  a wrong type (a string where a number goes, a seed where ...)
    NonFiniteError(UsageError)          NaN/inf in an input, a condition, loaded weights or a sampler's latent

`ldm_lite.checkpoint.CheckpointError` (an unreadable or mismatched checkpoint) is a `UsageError` too.
The CLI prints any of them as one line on stderr and exits with code 2; every other exception is a bug and keeps
its traceback. Because they subclass ValueError / TypeError, `except ValueError` in user code still catches them.
"""

from __future__ import annotations

__all__ = ["UsageError", "UsageTypeError", "NonFiniteError"]


class UsageError(ValueError):
    """A mistake in what the caller passed (value, shape, count, combination of arguments)."""


class UsageTypeError(UsageError, TypeError):
    """An argument of the wrong type; a TypeError as well as a UsageError."""


class NonFiniteError(UsageError):
    """NaN or inf where finite numbers are needed (inputs, conditions, weights, a sampler's latent)."""
