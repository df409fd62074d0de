"""Blame the dependency, not the dependent: which earlier exercise of the student's breaks this one.

When ``ep06.causal_attention`` fails because the student's ``ep06.causal_mask`` is wrong, the
dependent's own hints ("pass both lengths…") mislead. So:

* In the worker's child, :class:`Recorder` wraps the target's exercise *functions*, records the calls
  the exercise under check makes into the student's other exercises (arguments and result as plain
  values), and lists the exercises its code names or that ran during the check (``uses``), and which
  of those are still stubs (``stubs``). No reference code runs there.
* In the grader, :func:`blame` fetches the calls of a failing check (they stay in the child otherwise),
  runs the reference of each recorded dependency on the recorded arguments (with a live reference)
  and compares. A differing dependency is named first ("your
  ep06.causal_attention called your ep06.causal_mask(5, 7), whose result differs …: fix
  ep06.causal_mask first"), the dependent's misconception hints are dropped, and the report's
  "Next, fix …" line points at the dependency. Without a live reference, or for class exercises
  (whose calls need their weights), a used exercise that fails its own checks is named instead.
  A check blocked by several stubs names all of them.

Everything the child reports is untrusted: :func:`checked` keeps only known exercise ids and small
plain values.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import types

from .values import Array, Unsupported, to_plain

MAX_CALLS = 12
MAX_ELEMENTS = 1 << 16  # per recorded call: enough for the arguments of a mask or a RoPE table


# --- in the child -----------------------------------------------------------------------------------------


class Recorder:
    """Records, in the child, the calls one exercise makes into the student's other exercise functions."""

    def __init__(self):
        self.exercise: str | None = None
        self.calls: list[dict] = []
        self.touched: set[str] = set()  # exercises that ran during the check
        self._wrapped: dict[int, object] = {}  # id(student function) -> its recording wrapper
        self._ids: dict[int, str] = {}  # id(student object or wrapper) -> exercise id
        self._modules: set[str] = set()  # target modules already seen
        self._seen = 0  # len(sys.modules) at the last install
        self._uses_of: dict[str, list] = {}  # exercise name -> what its code names (it does not change)

    def install(self, package: str) -> None:
        """Wraps every exercise function of the target's loaded modules, wherever a module binds it."""
        from . import registry

        if len(sys.modules) == self._seen:
            return  # nothing imported since the last time (a probe calls this)
        self._seen = len(sys.modules)
        # The import system binds each submodule on its package, so the package's few names say which
        # target modules are loaded. Scanning sys.modules instead (thousands of entries once torch is
        # in) would write the reference count of every entry, and so copy ~1000 of the zygote's pages.
        loaded = sys.modules.get(package)
        names = {f"{package}.{attr}" for attr in (vars(loaded) if loaded is not None else ())
                 if sys.modules.get(f"{package}.{attr}") is not None}
        if names <= self._modules:
            return
        self._modules |= names
        modules = [sys.modules[name] for name in names]
        by_module = {ep.module: ep for ep in map(registry.load_episode, registry.episode_ids())}
        for module in modules:
            episode = by_module.get(module.__name__.rsplit(".", 1)[-1])
            for ex in episode.exercises if episode else []:
                obj = module.__dict__.get(ex.name)
                if obj is None or id(obj) in self._ids:
                    continue
                self._ids[id(obj)] = ex.id
                if inspect.isfunction(obj):
                    wrapper = self._wrap(ex.id, obj)
                    self._wrapped[id(obj)] = wrapper
                    self._ids[id(wrapper)] = ex.id
                elif inspect.isclass(obj) and ex.method and inspect.isfunction(obj.__dict__.get(ex.method)):
                    setattr(obj, ex.method, self._touching(ex.id, obj.__dict__[ex.method]))
        for module in modules:  # `from .ep06_causal_attention import causal_mask` bound the original
            for name, value in list(vars(module).items()):
                if id(value) in self._wrapped:
                    setattr(module, name, self._wrapped[id(value)])

    def _touching(self, exercise_id: str, method):
        """A class exercise's method that notes it ran (its calls need the instance: they are not recorded)."""
        @functools.wraps(method)
        def touched(*args, **kwargs):
            self.touched.add(exercise_id)
            return method(*args, **kwargs)
        return touched

    def _wrap(self, exercise_id: str, fn):
        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            first = exercise_id not in self.touched  # only the first call of each is compared: record that one
            self.touched.add(exercise_id)
            result = fn(*args, **kwargs)
            if first and self.exercise not in (None, exercise_id) and len(self.calls) < MAX_CALLS:
                call = {"exercise": exercise_id, "args": _plain_arg(list(args)), "kwargs": _plain_arg(kwargs),
                        "result": to_plain(result)}
                if _recordable(call):
                    self.calls.append(call)
            return result
        return recorded

    def begin(self, exercise_id: str) -> None:
        self.exercise, self.calls, self.touched = exercise_id, [], set()

    def report(self, module, name: str) -> dict:
        """What the grader needs to blame a dependency: the calls, and the exercises ``name`` uses."""
        uses, stubs = [], []
        if name not in self._uses_of:
            self._uses_of[name] = list(self._uses(getattr(module, name, None)))
        for dep, value in self._uses_of[name]:
            if dep not in uses:
                uses.append(dep)
                if _is_stub(value, dep):
                    stubs.append(dep)
        ran = sorted(self.touched - {self.exercise} - set(uses))
        # The calls themselves stay here until the grader asks (op "calls"): a check that passes never needs them.
        return {"recorded": len(self.calls), "uses": uses + ran, "stubs": stubs}

    def _uses(self, obj):
        """(exercise id, object) for every exercise the code of ``obj`` names, itself excluded."""
        own = self._ids.get(id(obj))
        for fn in _functions(obj):
            for name in _names(fn.__code__):
                value = fn.__globals__.get(name)
                dep = self._ids.get(id(value))
                if dep and dep != own:
                    yield dep, value


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _functions(obj) -> list:
    """The code of an exercise object: the function itself, or a class's own methods (unwrapped)."""
    if inspect.isfunction(obj):
        return [inspect.unwrap(obj)]
    if inspect.isclass(obj):
        return [inspect.unwrap(f) for f in vars(obj).values() if inspect.isfunction(f)]
    return []


def _is_stub(obj, exercise_id: str) -> bool:
    """True for an exercise still as generated: its code raises NotImplementedError("epNN.name")."""
    return any(exercise_id in f.__code__.co_consts and "NotImplementedError" in f.__code__.co_names
               for f in _functions(obj))


def _plain_arg(value):
    """Arguments as plain values; a config dataclass as ``{"$dataclass": name, field: value…}``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dataclass": type(value).__name__,
                **{f.name: _plain_arg(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (list, tuple)):
        return [_plain_arg(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_arg(v) for k, v in value.items()}
    return to_plain(value)


def _recordable(tree, budget: list | None = None) -> bool:
    """Small and plain throughout: no objects, at most :data:`MAX_ELEMENTS` numbers."""
    budget = [MAX_ELEMENTS] if budget is None else budget
    if isinstance(tree, Unsupported):
        return False
    if isinstance(tree, Array):
        budget[0] -= tree.data.size
        return budget[0] >= 0
    if isinstance(tree, list):
        return all(_recordable(v, budget) for v in tree)
    if isinstance(tree, dict):
        return all(_recordable(v, budget) for v in tree.values())
    return True


# --- in the grader ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _known() -> frozenset:
    from . import registry

    return frozenset(ex.id for ep in map(registry.load_episode, registry.episode_ids()) for ex in ep.exercises)


def checked(tree: dict) -> dict:
    """The child's ``calls``, ``uses`` and ``stubs``, kept only where they name known exercises."""
    known = _known()
    calls = tree.get("calls")
    calls = [c for c in calls[:MAX_CALLS] if isinstance(c, dict) and c.get("exercise") in known
             and isinstance(c.get("args"), list) and isinstance(c.get("kwargs"), dict) and _recordable(c)] \
        if isinstance(calls, list) else []
    lists = {k: [e for e in tree.get(k)[:50] if e in known] if isinstance(tree.get(k), list) else []
             for k in ("uses", "stubs")}
    return {"calls": calls, **lists}


def blame(record, answer: dict, grader) -> None:
    """Rewrites a failing ``record`` to name the dependency that breaks it, when there is one."""
    if record.passed:
        return
    deps = checked(answer)
    if record.status == "not_implemented" and deps["stubs"]:
        stubs = _course_order(deps["stubs"])
        absent = _not_handed_in(stubs, grader.submission)
        if absent:  # e.g. a Gradescope assignment for episode 6 whose upload lacks episode 5's file
            record.message = (f"uses {_and(stubs)}, but {_and(absent)} {'is' if len(absent) == 1 else 'are'} not "
                              f"in this submission (the stubs handed out were used): hand in "
                              f"{'that file' if len(absent) == 1 else 'those files'} with this one")
            record.blame = stubs[0]
        elif len(stubs) >= 2:
            record.message = f"uses {_and(stubs)}, which are not implemented yet (start with {stubs[0]})"
            record.blame = stubs[0]
    if record.passed or record.status == "not_implemented" or record.blame:
        return  # a stage check has named its part already, with the reference's own inputs
    known = grader.blamed.get(record.exercise)
    if known and answer.get("recorded") and known[0] in deps["uses"]:
        # Shown on an earlier check of this exercise, and this check called it too: one verdict serves both.
        dep, where = known
        record.message = (f"your {record.exercise} calls your {dep}, whose result differs from the reference "
                          f"(see {where}): fix {dep} first\n" + record.message)
        record.hint, record.blame = "", dep
        return
    calls = checked({"calls": grader.recorded_calls()})["calls"] if answer.get("recorded") else []
    for call in _first_call_per_exercise(calls):
        problem = grader.reference_call_problem(call, hidden=record.hidden)
        if problem:
            record.message = (f"your {record.exercise} called your {call['exercise']}({_args(call)}), whose result "
                              f"differs from the reference ({problem}): fix {call['exercise']} first\n"
                              + record.message)
            record.hint, record.blame = "", call["exercise"]
            grader.blamed[record.exercise] = (call["exercise"], record.id.split("::", 1)[1])
            return
    failing = [d for d in _course_order(deps["uses"]) if grader.fails_own_checks(d)]
    if failing:
        record.message = (f"your {record.exercise} uses your {_and(failing)}, which "
                          f"{'fails its' if len(failing) == 1 else 'fail their'} own checks: fix "
                          f"{failing[0]} first (the hints below may be about that)\n" + record.message)
        record.blame = failing[0]


def _not_handed_in(exercise_ids: list[str], submission) -> list[str]:
    """The files (``ep05_self_attention.py``) of these exercises that the submission lacked (the graded copy
    has the handed-out stubs in their place)."""
    from . import registry

    files = dict.fromkeys(f"{registry.load_episode(e.split('.')[0]).module}.py" for e in exercise_ids)
    return [f for f in files if f in submission.filled]


def _first_call_per_exercise(calls: list[dict]) -> list[dict]:
    seen, first = set(), []
    for call in calls:
        if call["exercise"] not in seen:
            seen.add(call["exercise"])
            first.append(call)
    return first


def _course_order(ids: list[str]) -> list[str]:
    from . import registry

    order = [ex.id for ep in map(registry.load_episode, registry.episode_ids()) for ex in ep.exercises]
    return sorted(dict.fromkeys(ids), key=order.index)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _args(call: dict) -> str:
    """``5, 7`` or ``tensor (2, 4, 5, 8) float32, …``: the arguments as a reader wants to see them."""
    def show(v) -> str:
        if isinstance(v, Array):
            return f"tensor {tuple(v.shape)} {v.dtype}"
        if isinstance(v, dict) and "$dataclass" in v:
            return f"{v['$dataclass']}(…)"
        if isinstance(v, list):
            return "[" + ", ".join(map(show, v[:4])) + (", …" if len(v) > 4 else "") + "]"
        return repr(v)[:40]
    parts = [show(a) for a in call["args"]] + [f"{k}={show(v)}" for k, v in call["kwargs"].items()]
    return ", ".join(parts)


def rebuild(tree, namespace):
    """The recorded arguments as the reference takes them: tensors, and config dataclasses of ``namespace``."""
    from .probing import to_torch

    if isinstance(tree, dict) and "$dataclass" in tree:
        cls = getattr(namespace, str(tree["$dataclass"]), None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"no dataclass {tree['$dataclass']!r} in the reference")
        return cls(**{k: rebuild(v, namespace) for k, v in tree.items() if k != "$dataclass"})
    if isinstance(tree, list):
        return [rebuild(v, namespace) for v in tree]
    if isinstance(tree, dict):
        return {k: rebuild(v, namespace) for k, v in tree.items()}
    return to_torch(tree)
