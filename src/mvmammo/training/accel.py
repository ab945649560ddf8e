"""torch.compile as an option that never stops a run: compile when asked, fall back to eager when the
compiler is missing or fails (no C++/Triton toolchain, an unsupported op), with one warning.

Compilation is lazy (it happens at the first call), so the fallback is taken at the first call that raises
inside the compiler; a failure on a later call (a recompilation for a new shape) falls back the same way.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch


class CompileOrEager:
    """Callable (and attribute proxy) over fn: the compiled version until it fails, then fn itself."""

    def __init__(self, fn: Callable, what: str, **compile_kwargs):
        self.eager, self.what = fn, what
        try:
            self.compiled = torch.compile(fn, **compile_kwargs)
        except Exception as exc:  # e.g. torch.compile unsupported on this Python
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        warnings.warn(f"torch.compile of the {self.what} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                      "running it eagerly", RuntimeWarning, stacklevel=3)
        self.compiled = None

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except (KeyboardInterrupt, torch.cuda.OutOfMemoryError):
                raise
            except Exception as exc:
                if not _is_compiler_error(exc):
                    raise
                self._give_up(exc)
        return self.eager(*args, **kwargs)

    def __getattr__(self, name):  # train()/eval()/parameters() of a wrapped module
        return getattr(self.__dict__["eager"], name)


def _is_compiler_error(exc: BaseException) -> bool:
    """Errors raised by dynamo/inductor (and toolchain failures), not by the model's own code."""
    mod = type(exc).__module__ or ""
    if mod.startswith(("torch._dynamo", "torch._inductor", "triton")):
        return True
    text = f"{type(exc).__name__} {exc}"
    return any(k in text for k in ("BackendCompilerFailed", "InductorError", "CppCompileError", "inductor",
                                   "dynamo", "triton", "Compiler"))


def compile_or_eager(fn: Callable, enabled: bool, what: str = "model", **compile_kwargs) -> Callable:
    """fn itself when not enabled or torch has no compile; else a :class:`CompileOrEager`."""
    if not enabled or not hasattr(torch, "compile"):
        return fn
    return CompileOrEager(fn, what, **compile_kwargs)
