"""Which Modbus reads cover a meter's registers: as few as the device allows.

Why coalesce: the original sent one request per value (27 round trips per SDM630 poll). Each
Modbus TCP round trip costs milliseconds on a serial gateway, so a meter read in two requests
is polled roughly ten times faster. Reading over a few unmapped addresses is normally
harmless and cheaper than another round trip; `PlanOptions.max_gap` bounds how many.

Why remember splits: some devices answer exception code 2 (illegal data address) to any read
that spans an unmapped register. `MeterPlanner.split` re-reads such a request value by value
and remembers those values, so the rest of the read plans them alone. Every poll run is a new
process, so a planner lives for one read only: what it learnt is handed back to the caller
(`MeterResult.learnt_splits`), which keeps it in the registry, and the next run seeds the
meter's planner with it (`MeterSpec.learnt_splits`) instead of failing the merged read again.
The registry forgets a meter's splits when its register map changes (a corrected map may have
no gap left to avoid).

Addresses are zero-based protocol addresses, sent as stored.

Inputs are checked where they enter, not here: registry rows (data type, address ranges, the
per-meter options) by registry/validation.py, the probe's by its command-line options. A plan
for anything else (a benchmark's fleet, a test) is the caller's responsibility.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from energymon_pipeline.modbus.types import (
    MAX_BITS_PER_REQUEST,
    MAX_REGISTERS_PER_REQUEST,
    FunctionCode,
    PlanOptions,
    ReadRequest,
    RegisterSpec,
    SplitKey,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "MAX_BITS_PER_REQUEST",
    "MAX_REGISTERS_PER_REQUEST",
    "MeterPlanner",
    "SharedPlans",
    "SplitKey",
    "plan_requests",
]

DEFAULT_OPTIONS = PlanOptions()
"""What a meter without overrides in the registry gets."""


def _sort_key(register: RegisterSpec) -> tuple[int, int, str]:
    # Ties broken by end and name so the plan does not depend on the registry's row order.
    return register.address, register.end, register.measurement


def _single(function_code: FunctionCode, register: RegisterSpec) -> ReadRequest:
    if register.scale_factor_address is None:
        return ReadRequest(function_code, register.address, register.width, (register,))
    first, end = register.span  # a value with a live scale factor is read with it
    return ReadRequest(function_code, first, end - first, (register,))


def _coalesce(
    function_code: FunctionCode,
    registers: list[RegisterSpec],
    options: PlanOptions,
    split: Collection[SplitKey],
) -> list[ReadRequest]:
    """Greedy merge of address-sorted values of one function code.

    A value marked in `split` is read alone and also ends the current run, so a merged read
    never spans it: whatever address upset the device lies around such values, and merging
    their neighbours across them would hit it again.

    A single value wider than the per-request limit (e.g. an INT64 with
    max_registers_per_request=2) still gets its one request: a value is never split across
    requests, and the device's answer is the best judge of whether it can be read at all.

    A value with a live scale factor (`RegisterSpec.scale_factor_address`) occupies its
    `span` here, so it and its scale factor always come from the same response.
    """
    limit = (
        options.max_bits_per_request if function_code.is_bit else options.max_registers_per_request
    )
    requests: list[ReadRequest] = []
    run: list[RegisterSpec] = []
    start = end = 0

    def flush() -> None:
        if run:
            requests.append(ReadRequest(function_code, start, end - start, tuple(run)))
            run.clear()

    for register in registers:
        if options.single_register_reads or (function_code, register.address) in split:
            flush()
            requests.append(_single(function_code, register))
            continue
        first, last = register.span
        if run and first - end <= options.max_gap and max(end, last) - min(start, first) <= limit:
            run.append(register)
            start, end = min(start, first), max(end, last)
        else:
            flush()
            run.append(register)
            start, end = first, last
    flush()
    return requests


def plan_requests(
    registers: Iterable[RegisterSpec],
    options: PlanOptions = DEFAULT_OPTIONS,
    split: Collection[SplitKey] = frozenset(),
) -> list[ReadRequest]:
    """The reads that cover `registers`, ordered by function code, then address.

    Per function code, values that are contiguous, overlap, or are separated by at most
    `options.max_gap` unread addresses share a request, up to `max_registers_per_request`
    registers (FC 3/4) or `max_bits_per_request` bits (FC 1/2). A value never straddles two
    requests. Values whose (function code, address) is in `split`, and all values when
    `single_register_reads` is set, are read one per request.
    """
    by_function: dict[FunctionCode, list[RegisterSpec]] = {}
    for register in registers:
        by_function.setdefault(FunctionCode(register.function_code), []).append(register)
    requests: list[ReadRequest] = []
    for function_code in sorted(by_function):
        ordered = sorted(by_function[function_code], key=_sort_key)
        requests.extend(_coalesce(function_code, ordered, options, split))
    return requests


class SharedPlans:
    """Plans shared by the meters of one read: meters of one type plan alike, so a fleet of
    SDM630s is planned once, not once per meter, and its meters get the same ReadRequest
    objects (which keeps decode.block_decoder hitting by identity, without hashing a request).

    Keyed by the identity of the registers tuple (the registry gives the meters of one type
    one tuple), the options and the split memory; each entry holds its tuple, so an id cannot
    be reused by another tuple while the entry lives. A tuple not seen before is planned, never
    hashed by value. For one read on one thread (the poll loop's event loop)."""

    def __init__(self) -> None:
        self._plans: dict[
            tuple[int, PlanOptions, frozenset[SplitKey]],
            tuple[tuple[RegisterSpec, ...], tuple[ReadRequest, ...]],
        ] = {}

    def plan(
        self,
        registers: tuple[RegisterSpec, ...],
        options: PlanOptions,
        split: Collection[SplitKey],
    ) -> tuple[ReadRequest, ...]:
        key = (id(registers), options, frozenset(split))
        entry = self._plans.get(key)
        if entry is not None and entry[0] is registers:
            return entry[1]
        requests = tuple(plan_requests(registers, options, split))
        self._plans[key] = (registers, requests)
        return requests


class MeterPlanner:
    """One meter's request plan, plus the values its device refused to have merged.

    The reader makes one per meter for a read (all the samples of one run), seeded with the
    splits earlier runs learnt. `plan` returns the same ReadRequest objects while the
    definitions, options and split memory are unchanged, which keeps the decoder cache
    (decode.block_decoder) hitting by identity from one sample to the next. Not thread-safe:
    use it from one thread (the poll loop's event loop).

    Usage on exception code 2 for a merged read::

        for request in planner.split(failed):   # [] if `failed` held a single value
            read(request)                       # a failure now is that value's own
    """

    def __init__(self, split: Iterable[SplitKey] = (), shared: SharedPlans | None = None) -> None:
        self._split: set[SplitKey] = {(int(fc), int(address)) for fc, address in split}
        self._registers: tuple[RegisterSpec, ...] | None = None
        self._options: PlanOptions | None = None
        self._requests: tuple[ReadRequest, ...] | None = None
        self._shared = shared

    @property
    def split_keys(self) -> frozenset[SplitKey]:
        """(function code, address) of every value this meter reads alone."""
        return frozenset(self._split)

    def plan(
        self,
        registers: Iterable[RegisterSpec],
        options: PlanOptions = DEFAULT_OPTIONS,
    ) -> list[ReadRequest]:
        """`plan_requests` with this meter's split memory, reusing the last plan if unchanged."""
        registers = tuple(registers)
        if (
            self._requests is None
            or (registers is not self._registers and registers != self._registers)
            or options != self._options
        ):
            if self._shared is None:
                self._requests = tuple(plan_requests(registers, options, self._split))
            else:
                self._requests = self._shared.plan(registers, options, self._split)
            self._registers, self._options = registers, options
        return list(self._requests)

    def split(self, request: ReadRequest) -> list[ReadRequest]:
        """Remember `request`'s values as read-alone; return one request per value to retry now.

        Returns [] for a request that already holds a single value: nothing is left to split,
        so the error belongs to that value.
        """
        if len(request.registers) <= 1:
            return []
        function_code = FunctionCode(request.function_code)
        self._split.update((int(function_code), r.address) for r in request.registers)
        self._requests = None
        return [_single(function_code, r) for r in sorted(request.registers, key=_sort_key)]
