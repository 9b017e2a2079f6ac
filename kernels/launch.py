"""Low-overhead kernel launches: every Triton launch of einsim goes through a `TritonLaunch`
(one kernel, its grid, scalars and compile-time constants fixed; only tensors change), held by a
per-shape launch plan that a `PlanCache` builds on first use.

Why: `kernel[grid](...)` re-binds, re-specialises and re-hashes every argument on every call
(tens of microseconds for a 40-argument kernel), and our launchers used to check inputs, resolve
the tuned config (file-system access) and rebuild grids per call. A plan does all of that once
per (shapes, strides, dtypes, device, options); a hit costs one dictionary lookup, the output
allocations and the compiled launcher's own call. docs/kernels.md § Launch plans.

Imports neither torch nor triton at module level (the registry stays torch-free); the launchers
that use it do.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from einsim.errors import ConfigError


class TritonLaunch:
    """One launch of one `@triton.jit` kernel with everything but the tensors fixed.

    Built from a call written as usual, `TritonLaunch(kernel, grid, *args, **kwargs)` with
    kwargs holding both kernel parameters and launch options (num_warps, num_stages, ...). The
    arguments that are tensors (or tensor descriptors) become slots, dropped from the template
    (a plan never keeps a caller's tensor alive); each call passes new ones, in parameter order:
    `launch(q, k, v, out, lse)`. The first call goes through `kernel[grid](...)` (Triton compiles
    or loads its cache) and keeps the compiled kernel; later calls go straight to its C launcher
    with the current CUDA stream, as Triton's own `JITFunction.run` does after its cache lookup,
    without re-binding and re-specialising every argument. Under Triton's CPU interpreter there
    is no compiled kernel: every call runs the interpreter.
    """

    __slots__ = ("kernel", "grid", "template", "tensor_slots", "options", "compiled", "fast",
                 "_stream", "_device", "_hooks", "name", "on_compile")

    def __init__(self, kernel, grid: Sequence[int], *args, on_compile: Callable[[Any], None] | None = None,
                 **kwargs) -> None:
        names = list(kernel.arg_names)
        values = dict(zip(names, args))
        options = {}
        for name, value in kwargs.items():
            if name in names:
                if name in values:
                    raise ConfigError(f"launch of {name_of(kernel)}: {name} given twice")
                values[name] = value
            else:
                options[name] = value
        missing = [n for n in names if n not in values]
        if missing or len(args) > len(names):
            raise ConfigError(f"launch of {name_of(kernel)}: parameters missing {missing}, "
                              f"{len(args)} positional for {len(names)}")
        self.kernel = kernel
        self.name = name_of(kernel)
        grid = tuple(int(g) for g in grid)
        self.grid = grid + (1,) * (3 - len(grid))
        self.tensor_slots = tuple(i for i, n in enumerate(names) if _is_tensor(values[n]))
        self.template = [None if i in self.tensor_slots else values[n] for i, n in enumerate(names)]
        self.options = options
        self.compiled = None
        self.fast = False
        self.on_compile = on_compile
        self._stream = None
        self._device = None
        self._hooks = None

    def __call__(self, *tensors) -> None:
        full = list(self.template)
        for slot, tensor in zip(self.tensor_slots, tensors):
            full[slot] = tensor
        if self.fast:
            hooks = self._hooks
            if not (_listening(hooks.launch_enter_hook) or _listening(hooks.launch_exit_hook)):
                compiled = self.compiled
                grid = self.grid
                compiled.run(grid[0], grid[1], grid[2], self._stream(self._device),
                             compiled.function, compiled.packed_metadata, None, None, None, *full)
                return
            # A profiler (proton) listens: let Triton build its launch metadata and call it.
        self._slow(full)

    def _slow(self, full: list) -> None:
        compiled = self.kernel[self.grid](*full, **self.options)
        if self.compiled is None and compiled is not None and hasattr(compiled, "packed_metadata"):
            self.compiled = compiled
            if self.on_compile is not None:
                self.on_compile(compiled)
            self._enable_fast_path()

    def _enable_fast_path(self) -> None:
        """Keep the driver's stream getter and device for direct launches; any surprise in
        Triton's internals (another version) leaves the plan on the slow, always-correct path."""
        try:
            from triton import knobs
            from triton.runtime import driver

            active = driver.active
            self._device = active.get_current_device()
            self._stream = active.get_current_stream
            self._hooks = knobs.runtime
            self.compiled.run  # loads the module (raises OutOfResources here if it cannot run)
            self.fast = all(hasattr(self.compiled, a) for a in ("function", "packed_metadata"))
        except Exception:  # noqa: BLE001 - an unknown Triton: stay on kernel[grid]
            self.fast = False


class DescriptorFactory:
    """Host tensor descriptors of one fixed shape, strides and block for a new base tensor per
    call. Triton's constructor checks alignment and shapes each time; a plan's key already
    fixes all of them, so the descriptor is checked once here and copied per call."""

    __slots__ = ("cls", "fields")

    def __init__(self, tensor, block_shape: Sequence[int]) -> None:
        from triton.tools.tensor_descriptor import TensorDescriptor

        checked = TensorDescriptor(tensor, list(tensor.shape), list(tensor.stride()),
                                   list(block_shape))
        self.cls = TensorDescriptor
        self.fields = dict(vars(checked), base=None)

    def __call__(self, tensor):
        descriptor = object.__new__(self.cls)
        vars(descriptor).update(self.fields)
        descriptor.base = tensor
        return descriptor


class PlanCache:
    """Launch plans by key: `find` on every call, `store` after building one on a miss. At most
    `capacity` kept (the oldest dropped first). A plain dict underneath: a hit is one
    dictionary lookup."""

    def __init__(self, name: str, capacity: int = 1024) -> None:
        self.name = name
        self.capacity = capacity
        self._plans: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def find(self, make_key: Callable[[], Hashable]) -> tuple[Hashable | None, Any | None]:
        """(key, plan) for the call `make_key` describes; plan None on a miss (build it and
        `store` it). key None when the arguments cannot make a key (not tensors, unhashable
        options): the caller's checks then say what is wrong, and nothing is cached."""
        try:
            key = make_key()
            plan = self._plans.get(key)
        except (AttributeError, TypeError):
            return None, None
        if plan is not None:
            self.hits += 1
        return key, plan

    def store(self, key: Hashable | None, plan: Any) -> Any:
        """Keep `plan` under `key` (not when key is None) and return it."""
        if key is None:
            return plan
        with self._lock:
            self.misses += 1
            self._plans[key] = plan
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return plan

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._plans)


PLAN_CACHES: dict[str, PlanCache] = {}


def plan_cache(name: str, capacity: int = 1024) -> PlanCache:
    """The process-wide plan cache of one launcher (created on first use)."""
    cache = PLAN_CACHES.get(name)
    if cache is None:
        cache = PLAN_CACHES.setdefault(name, PlanCache(name, capacity))
    return cache


def clear_plans() -> None:
    """Forget every launch plan (after the tuning cache changed, or in tests)."""
    for cache in PLAN_CACHES.values():
        cache.clear()


def tensor_key(tensor) -> tuple:
    """What a plan depends on in one tensor: shape, strides, dtype, device and whether its
    address is 16-byte aligned (Triton specialises pointers on it; descriptors need it)."""
    return (tensor.shape, tensor.stride(), tensor.dtype, tensor.device, tensor.data_ptr() % 16 == 0)


def name_of(kernel) -> str:
    return getattr(getattr(kernel, "fn", None), "__name__", None) or getattr(kernel, "__name__", str(kernel))


def _listening(hook) -> bool:
    """Is a launch hook installed? Triton >= 3.4 keeps a HookChain (empty: nobody listens),
    older ones None or a callable."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _is_tensor(value) -> bool:
    """A torch tensor or a Triton host tensor descriptor (both change per call)."""
    return hasattr(value, "data_ptr") or type(value).__name__ == "TensorDescriptor"


# What the compiler chose for each kernel's first launch of a plan (every family records here).
LAST_LAUNCH: dict[str, dict] = {}


def remember_launch(kernel: str, compiled) -> None:
    """Keep what the compiler chose for a kernel's first launch of a plan (shared memory,
    registers, spills), so benchmarks can check the resource model against it."""
    try:
        LAST_LAUNCH[kernel] = {"shared": int(compiled.metadata.shared),
                               "registers": int(getattr(compiled, "n_regs", 0) or 0),
                               "spills": int(getattr(compiled, "n_spills", 0) or 0)}
    except (AttributeError, TypeError, ValueError):  # the interpreter compiles nothing
        LAST_LAUNCH.pop(kernel, None)


__all__ = ["DescriptorFactory", "LAST_LAUNCH", "PLAN_CACHES", "PlanCache", "TritonLaunch", "clear_plans",
           "plan_cache", "remember_launch", "tensor_key"]
