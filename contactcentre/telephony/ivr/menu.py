"""IVR menus as data: a TOML file in, a checked ``Menu`` out.

The file is a graph of named nodes (``[nodes.NAME]`` with a ``kind``), a prompt table (``[prompts.ID]`` with one
text per language) and defaults (``[settings]``). Every mistake is one ``ConfigError`` naming the file and the
key, e.g. ``contactcentre/data/ivr/main.toml: nodes.main.options.1: unknown node 'biling'`` — the same shape
as the centre configuration, so an operator reads both the same way. See docs/ivr.md for the format.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from contactcentre.acd import BusinessCalendar
from contactcentre.config_base import (
    ALWAYS_OPEN,
    MAX_LEVEL,
    MIN_LEVEL,
    CalendarConfig,
    ConfigError,
    _Strict,
    convert,
)

if TYPE_CHECKING:
    from contactcentre.config import CentreConfig

DTMF_KEYS = frozenset("0123456789*#")
BUILTIN_HOOKS: dict[str, frozenset[str]] = {
    # hook name -> the outcomes it can produce (a file naming any other outcome for it has a typo)
    "case_status": frozenset({"found", "not_found"}),
    "opening_hours": frozenset({"done"}),
}
CALLBACK_TIMES = re.compile(r"^(asap|next_open|\+(\d+)min)$")
MAX_COLLECT_DIGITS = 32
_NODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # no '>' or '/': they separate steps in ivr_path
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field '([^']*)'")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


# ------------------------------------------------------------------------------------------------ the file


class Settings(_Strict):
    """Defaults for every node, and the limits that make any call end in bounded time."""

    timeout_ms: int = 5000  # waiting for the first key after a menu or collect prompt
    inter_digit_ms: int = 3000  # between keys while collecting digits
    max_retries: int = 2  # replays after the first attempt before ``on_exhausted``
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    on_exhausted: str | None = None
    prompt_max_ms: int = 60_000  # a prompt whose end the media server never reports counts as done after this
    max_call_ms: int = 600_000  # then the call goes to ``on_time_limit`` (or the IVR hangs up)
    on_time_limit: str | None = None


class _Node(_Strict, tag_field="kind", kw_only=True):
    description: str = ""


class PromptNode(_Node, tag="prompt"):
    prompt: str
    next: str


class MenuNode(_Node, tag="menu"):
    prompt: str
    options: dict[str, str]
    timeout_ms: int | None = None
    max_retries: int | None = None
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    on_exhausted: str | None = None
    barge_in: bool = True


class CollectNode(_Node, tag="collect"):
    prompt: str
    var: str
    next: str
    max_digits: int
    min_digits: int = 1
    terminator: Literal["#", "*", ""] = "#"
    pattern: str | None = None  # must match the whole entry (without the terminator)
    timeout_ms: int | None = None
    inter_digit_ms: int | None = None
    max_retries: int | None = None
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    on_exhausted: str | None = None
    barge_in: bool = True


class HoursNode(_Node, tag="hours"):
    calendar: str
    open: str
    closed: str


class QueueNode(_Node, tag="queue"):
    queue: str
    priority: int = 0  # a bonus on top of the queue's own priority
    skills: dict[str, int] = {}
    skills_by_language: dict[str, dict[str, int]] = {}
    attributes: dict[str, str] = {}
    prompt: str | None = None  # played before the call is handed to the queue


class SelfServiceNode(_Node, tag="self_service"):
    hook: str
    outcomes: dict[str, str]
    otherwise: str  # unlisted outcome, missing hook or failing hook
    input: str | None = None  # the variable the hook reads (e.g. the collected case number)
    served: list[str] | None = None  # outcomes that count as served in self-service; default: all listed


class CallbackNode(_Node, tag="callback"):
    queue: str
    number_prompt: str
    confirm_prompt: str | None = None  # "we can call you on {ani}: 1 for this number, 2 for another"
    number_pattern: str = "[0-9]{6,15}"
    number_max_digits: int = 15
    when_prompt: str | None = None
    times: dict[str, str] = {}  # key -> "asap" | "next_open" | "+Nmin"
    calendar: str | None = None  # for "next_open"
    done_prompt: str | None = None
    on_exhausted: str | None = None
    priority: int = 0
    attributes: dict[str, str] = {}
    timeout_ms: int | None = None
    inter_digit_ms: int | None = None
    max_retries: int | None = None
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None


class LanguageNode(_Node, tag="language"):
    language: str
    next: str


class HangupNode(_Node, tag="hangup"):
    prompt: str | None = None
    reason: str = "ivr"


class EndNode(_Node, tag="end"):
    """The IVR's part is over and the call goes elsewhere than a queue (e.g. ``handoff = "voicemail"``)."""

    handoff: str
    prompt: str | None = None
    attributes: dict[str, str] = {}


Node = (
    PromptNode
    | MenuNode
    | CollectNode
    | HoursNode
    | QueueNode
    | SelfServiceNode
    | CallbackNode
    | LanguageNode
    | HangupNode
    | EndNode
)
TERMINAL_KINDS: tuple[type, ...] = (QueueNode, HangupNode, EndNode)
INPUT_KINDS: tuple[type, ...] = (MenuNode, CollectNode, CallbackNode)


class MenuFile(_Strict):
    name: str
    start: str
    languages: list[str] = msgspec.field(default_factory=lambda: ["en"])
    default_language: str | None = None
    description: str = ""
    settings: Settings = msgspec.field(default_factory=Settings)
    prompts: dict[str, dict[str, str]] = {}
    labels: dict[str, dict[str, dict[str, str]]] = {}  # variable -> value -> language -> words
    nodes: dict[str, Node] = {}


# ------------------------------------------------------------------------------------------------ the menu


class Menu:
    """A checked menu, ready for sessions: the file's structs plus compiled patterns and calendars."""

    def __init__(self, spec: MenuFile, source: str, calendars: Mapping[str, BusinessCalendar]) -> None:
        self.spec = spec
        self.source = source
        self.name = spec.name
        self.start = spec.start
        self.settings = spec.settings
        self.languages = tuple(spec.languages)
        self.default_language = spec.default_language or spec.languages[0]
        self.nodes = spec.nodes
        self.calendars = dict(calendars)
        self.patterns: dict[str, re.Pattern[str]] = {}
        for name, node in spec.nodes.items():
            if isinstance(node, CollectNode):
                self.patterns[name] = re.compile(node.pattern or "[0-9]+")
            elif isinstance(node, CallbackNode):
                self.patterns[name] = re.compile(node.number_pattern)
        self._fields = {pid: _placeholders(texts) for pid, texts in spec.prompts.items()}

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def prompt_variables(self, prompt_id: str) -> tuple[str, ...]:
        return self._fields[prompt_id]

    def render(self, prompt_id: str, language: str, variables: Mapping[str, str]) -> str:
        """The prompt's text in ``language`` with ``{name}`` filled in (through ``labels`` when it has words for
        the value). A variable with no value renders empty: a missing case status must not read "{status}"."""
        text = self.spec.prompts[prompt_id].get(language) or self.spec.prompts[prompt_id][self.default_language]
        values = {}
        for name in self._fields[prompt_id]:
            value = variables.get(name, "")
            values[name] = self.spec.labels.get(name, {}).get(value, {}).get(language, value)
        return text.format_map(values)

    def __repr__(self) -> str:
        return f"Menu({self.name!r} from {self.source}, {len(self.nodes)} nodes)"


def _placeholders(texts: Mapping[str, str]) -> tuple[str, ...]:
    names: list[str] = []
    for text in texts.values():
        for _, field, _, _ in string.Formatter().parse(text):
            if field and field not in names:
                names.append(field)
    return tuple(names)


# ------------------------------------------------------------------------------------------------ loading


def load_menu(
    path: str | Path,
    centre: CentreConfig | None = None,
    *,
    queues: Collection[str] | None = None,
    calendars: Mapping[str, CalendarConfig | None] | None = None,
    skills: Collection[str] | None = None,
) -> Menu:
    """Read and check a menu file.

    ``centre`` (or ``queues``/``calendars``/``skills`` one by one) is what the menu is checked against. Queue
    and skill names are only checked when given; calendars are always needed by name, because a session must
    evaluate them — without them only ``"24x7"`` is known.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return parse_menu(data, source, centre, queues=queues, calendars=calendars, skills=skills)


def parse_menu(
    data: dict[str, Any],
    source: str = "<menu>",
    centre: CentreConfig | None = None,
    *,
    queues: Collection[str] | None = None,
    calendars: Mapping[str, CalendarConfig | None] | None = None,
    skills: Collection[str] | None = None,
) -> Menu:
    """A checked menu from already-parsed TOML data."""
    if centre is not None:
        queues = [q.name for q in centre.queues] if queues is None else queues
        calendars = dict(centre.calendars) if calendars is None else calendars
        skills = (list(centre.skills) or None) if skills is None else skills
    cals: dict[str, CalendarConfig | None] = {ALWAYS_OPEN: None, **(calendars or {})}
    spec = _convert_file(data, source)
    _check(spec, source, set(queues) if queues is not None else None, cals, set(skills) if skills else None)
    return Menu(spec, source, {name: BusinessCalendar(name, cfg) for name, cfg in cals.items()})


def _convert_file(data: dict[str, Any], source: str) -> MenuFile:
    if not isinstance(data, dict):
        raise ConfigError(source, "", "a menu file is a TOML table")
    nodes = data.get("nodes", {})
    if not isinstance(nodes, dict):
        raise ConfigError(source, "nodes", "must be a table of [nodes.NAME] tables")
    # Nodes one by one: msgspec reports a dict key as "[...]", and the node's name is what the reader needs.
    converted: dict[str, Node] = {}
    for name, raw in nodes.items():
        try:
            converted[name] = convert(raw, Node, source)  # type: ignore[arg-type]
        except ConfigError as err:
            problem = err.problem.strip()
            if isinstance(raw, dict) and "kind" not in raw:
                problem = f"missing 'kind' (one of {', '.join(_kinds())})"
            elif err.key == "kind":
                problem = f"{problem} (kind is one of {', '.join(_kinds())})"
            raise _named(source, f"nodes.{name}", err.key, problem) from None
    try:
        spec: MenuFile = convert({**data, "nodes": {}}, MenuFile, source)
    except ConfigError as err:
        raise _named(source, "", err.key, err.problem.strip()) from None
    return msgspec.structs.replace(spec, nodes=converted)


def _named(source: str, prefix: str, key: str, problem: str) -> ConfigError:
    """The error with its full key; an unknown field (a typo) is named in the key, where the reader looks."""
    unknown = _UNKNOWN_FIELD.match(problem)
    parts = [p for p in (prefix, key, unknown.group(1) if unknown else "") if p]
    return ConfigError(source, ".".join(parts), problem)


def _kinds() -> list[str]:
    return [t.__struct_config__.tag for t in Node.__args__]  # type: ignore[attr-defined]


def edges(name: str, node: Node, settings: Settings) -> Iterator[tuple[str, str | None, bool]]:
    """(key, target node, needs caller input) for every way out of ``node``; target None when unset."""
    key = f"nodes.{name}"
    exhausted = ("on_exhausted", getattr(node, "on_exhausted", None) or settings.on_exhausted)
    if isinstance(node, PromptNode | LanguageNode):
        yield f"{key}.next", node.next, False
    elif isinstance(node, MenuNode):
        for digit, target in node.options.items():
            yield f"{key}.options.{digit}", target, True
        yield f"{key}.{exhausted[0]}", exhausted[1], False
    elif isinstance(node, CollectNode):
        yield f"{key}.next", node.next, True
        yield f"{key}.{exhausted[0]}", exhausted[1], False
    elif isinstance(node, CallbackNode):
        yield f"{key}.{exhausted[0]}", exhausted[1], False
    elif isinstance(node, HoursNode):
        yield f"{key}.open", node.open, False
        yield f"{key}.closed", node.closed, False
    elif isinstance(node, SelfServiceNode):
        for outcome, target in node.outcomes.items():
            yield f"{key}.outcomes.{outcome}", target, False
        yield f"{key}.otherwise", node.otherwise, False


def _check(
    spec: MenuFile,
    source: str,
    queues: set[str] | None,
    calendars: Mapping[str, CalendarConfig | None],
    skills: set[str] | None,
) -> None:
    def fail(key: str, problem: str) -> None:
        raise ConfigError(source, key, problem)

    st = spec.settings
    if not spec.name:
        fail("name", "must not be empty")
    if not spec.languages:
        fail("languages", "name at least one language")
    for i, lang in enumerate(spec.languages):
        if not _LANGUAGE.match(lang):
            fail(f"languages[{i}]", f"{lang!r} is not a language code like 'en' or 'nl'")
        if spec.languages.index(lang) != i:
            fail(f"languages[{i}]", f"{lang!r} is listed twice")
    langs = set(spec.languages)
    if spec.default_language is not None and spec.default_language not in langs:
        fail("default_language", f"{spec.default_language!r} is not in languages")

    for key in ("timeout_ms", "inter_digit_ms", "prompt_max_ms", "max_call_ms"):
        if getattr(st, key) <= 0:
            fail(f"settings.{key}", "must be > 0")
    if st.max_retries < 0:
        fail("settings.max_retries", "must be >= 0")

    # Prompts: a text for every language, and only {name} placeholders (no format specs: they are spoken).
    for pid, texts in spec.prompts.items():
        for lang in spec.languages:
            if lang not in texts:
                fail(f"prompts.{pid}", f"no text for language {lang!r}")
        for lang, text in texts.items():
            if lang not in langs:
                fail(f"prompts.{pid}.{lang}", f"language {lang!r} is not in languages")
            try:
                parts = list(string.Formatter().parse(text))
            except ValueError as exc:
                fail(f"prompts.{pid}.{lang}", f"bad placeholder: {exc}")
            for _, field, spec_, conv in parts:
                if field is not None and (not field.isidentifier() or spec_ or conv):
                    fail(f"prompts.{pid}.{lang}", f"placeholders are plain {{name}}, not {{{field}...}}")
    for var, values in spec.labels.items():
        for value, words in values.items():
            for lang in words:
                if lang not in langs:
                    fail(f"labels.{var}.{value}.{lang}", f"language {lang!r} is not in languages")

    nodes = spec.nodes
    if not nodes:
        fail("nodes", "a menu needs at least one node")

    def prompt_ok(key: str, pid: str | None) -> None:
        if pid is not None and pid not in spec.prompts:
            fail(key, f"unknown prompt {pid!r}")

    def node_ok(key: str, target: str | None) -> None:
        if target is None:
            fail(key, "must name a node (or set it under [settings])")
        elif target not in nodes:
            fail(key, f"unknown node {target!r}")

    def positive(key: str, value: int | None) -> None:
        if value is not None and value <= 0:
            fail(key, "must be > 0")

    def retries(key: str, value: int | None) -> None:
        if value is not None and value < 0:
            fail(key, "must be >= 0")

    def dtmf(key: str, digit: str) -> None:
        if len(digit) != 1 or digit not in DTMF_KEYS:
            fail(key, f"{digit!r} is not a telephone key (one of 0-9, * and #)")

    def queue_ok(key: str, queue: str) -> None:
        if queues is not None and queue not in queues:
            fail(key, f"unknown queue {queue!r} (known: {', '.join(sorted(queues))})")

    def calendar_ok(key: str, name: str) -> None:
        if name not in calendars:
            fail(key, f"unknown calendar {name!r} (known: {', '.join(sorted(calendars))})")

    def levels(key: str, given: Mapping[str, int]) -> None:
        for skill, level in given.items():
            if skills is not None and skill not in skills:
                fail(f"{key}.{skill}", f"unknown skill {skill!r}")
            if not MIN_LEVEL <= level <= MAX_LEVEL:
                fail(f"{key}.{skill}", f"level {level} is outside {MIN_LEVEL}-{MAX_LEVEL}")

    def common_input(key: str, node: MenuNode | CollectNode | CallbackNode) -> None:
        positive(f"{key}.timeout_ms", node.timeout_ms)
        retries(f"{key}.max_retries", node.max_retries)
        prompt_ok(f"{key}.invalid_prompt", node.invalid_prompt)
        prompt_ok(f"{key}.timeout_prompt", node.timeout_prompt)

    prompt_ok("settings.invalid_prompt", st.invalid_prompt)
    prompt_ok("settings.timeout_prompt", st.timeout_prompt)
    if st.on_exhausted is not None:
        node_ok("settings.on_exhausted", st.on_exhausted)
    if st.on_time_limit is not None:
        node_ok("settings.on_time_limit", st.on_time_limit)
        if not isinstance(nodes[st.on_time_limit], TERMINAL_KINDS):
            fail("settings.on_time_limit", "must be a queue, hangup or end node (the call is out of time)")
    collected = {n.var for n in nodes.values() if isinstance(n, CollectNode)}

    for name, node in nodes.items():
        key = f"nodes.{name}"
        if not _NODE_NAME.match(name):
            fail(key, "node names are letters, digits, '_', '.' and '-'")
        prompt_ok(f"{key}.prompt", getattr(node, "prompt", None))
        if isinstance(node, MenuNode):
            if not node.options:
                fail(f"{key}.options", "a menu needs at least one option")
            for digit in node.options:
                dtmf(f"{key}.options.{digit}", digit)
            common_input(key, node)
        elif isinstance(node, CollectNode):
            common_input(key, node)
            positive(f"{key}.inter_digit_ms", node.inter_digit_ms)
            if not node.var.isidentifier():
                fail(f"{key}.var", f"{node.var!r} is not a variable name")
            if not 1 <= node.min_digits <= node.max_digits <= MAX_COLLECT_DIGITS:
                fail(f"{key}.max_digits", f"need 1 <= min_digits <= max_digits <= {MAX_COLLECT_DIGITS}")
            _pattern_ok(f"{key}.pattern", node.pattern, fail)
        elif isinstance(node, CallbackNode):
            common_input(key, node)
            positive(f"{key}.inter_digit_ms", node.inter_digit_ms)
            queue_ok(f"{key}.queue", node.queue)
            for field in ("number_prompt", "confirm_prompt", "when_prompt", "done_prompt"):
                prompt_ok(f"{key}.{field}", getattr(node, field))
            _pattern_ok(f"{key}.number_pattern", node.number_pattern, fail)
            if not 1 <= node.number_max_digits <= MAX_COLLECT_DIGITS:
                fail(f"{key}.number_max_digits", f"must be 1-{MAX_COLLECT_DIGITS}")
            if node.when_prompt is not None and not node.times:
                fail(f"{key}.times", 'when_prompt asks for a time: give the keys, e.g. { 1 = "asap" }')
            if node.times and node.when_prompt is None:
                fail(f"{key}.when_prompt", "times are offered by this prompt: name it")
            for digit, when in node.times.items():
                dtmf(f"{key}.times.{digit}", digit)
                if not CALLBACK_TIMES.match(when):
                    fail(f"{key}.times.{digit}", f"{when!r} is not 'asap', 'next_open' or '+Nmin'")
                if when == "next_open" and node.calendar is None:
                    fail(f"{key}.calendar", "'next_open' needs the calendar whose opening it means")
            if node.calendar is not None:
                calendar_ok(f"{key}.calendar", node.calendar)
        elif isinstance(node, HoursNode):
            calendar_ok(f"{key}.calendar", node.calendar)
        elif isinstance(node, QueueNode):
            queue_ok(f"{key}.queue", node.queue)
            levels(f"{key}.skills", node.skills)
            for lang, extra in node.skills_by_language.items():
                if lang not in langs:
                    fail(f"{key}.skills_by_language.{lang}", f"language {lang!r} is not in languages")
                levels(f"{key}.skills_by_language.{lang}", extra)
        elif isinstance(node, SelfServiceNode):
            known = BUILTIN_HOOKS.get(node.hook)
            for outcome in node.outcomes:
                if known is not None and outcome not in known:
                    fail(f"{key}.outcomes.{outcome}", f"hook {node.hook!r} has outcomes {', '.join(sorted(known))}")
            for outcome in node.served or ():
                if outcome not in node.outcomes:
                    fail(f"{key}.served", f"{outcome!r} is not one of the listed outcomes")
            if node.hook == "case_status" and node.input is None:
                fail(f"{key}.input", "case_status reads the case number: name the variable a collect node sets")
            if node.input is not None and node.input not in collected | {"ani"}:
                fail(f"{key}.input", f"no collect node sets {node.input!r}")
        elif isinstance(node, LanguageNode) and node.language not in langs:
            fail(f"{key}.language", f"{node.language!r} is not in languages")
        for edge_key, target, _ in edges(name, node, st):
            node_ok(edge_key, target)

    node_ok("start", spec.start)
    _check_graph(spec, fail)


def _pattern_ok(key: str, pattern: str | None, fail: Any) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        fail(key, f"not a regular expression: {exc}")


def _check_graph(spec: MenuFile, fail: Any) -> None:
    """No loop a silent caller could go round for ever, and no node nobody can reach."""
    st = spec.settings
    silent: dict[str, list[tuple[str, str]]] = {name: [] for name in spec.nodes}
    everything: dict[str, list[str]] = {name: [] for name in spec.nodes}
    for name, node in spec.nodes.items():
        for key, target, needs_input in edges(name, node, st):
            assert target is not None  # checked before
            everything[name].append(target)
            if not needs_input:
                silent[name].append((key, target))

    # A cycle of edges taken without the caller pressing anything (prompts, branches, hooks, exhausted retries)
    # would keep a silent or absent caller in the IVR until the time limit: refuse it at load time.
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[tuple[str, str]]) -> None:
        state[node] = 1
        for key, target in silent[node]:
            if state.get(target) == 1:  # on the current path: ``path`` runs from there to ``node``
                names = [n for n, _ in path]
                i = names.index(target)
                first_key = path[i + 1][1] if i + 1 < len(path) else key  # the edge that leaves ``target``
                fail(first_key, f"loop without caller input: {' -> '.join([*names[i:], target])}")
            if target not in state:
                visit(target, [*path, (target, key)])
        state[node] = 2

    for name in spec.nodes:
        if name not in state:
            visit(name, [(name, f"nodes.{name}")])

    seen: set[str] = set()
    todo = [spec.start, *([st.on_time_limit] if st.on_time_limit else [])]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(everything[n])
    for name in spec.nodes:
        if name not in seen:
            fail(f"nodes.{name}", f"cannot be reached from start ({spec.start!r})")


def key_towards(menu: Menu, node: str, queue: str) -> str | None:
    """The key a caller at menu ``node`` presses to get to ``queue`` by the fewest nodes (the lowest key on a
    tie), or ``None`` when no option leads there (a simulated caller's choice; an operator's sanity check)."""
    here = menu.nodes.get(node)
    if not isinstance(here, MenuNode):
        return None
    best: tuple[int, str] | None = None
    for key, target in sorted(here.options.items()):
        hops = _hops_to_queue(menu, target, queue)
        if hops is not None and (best is None or hops < best[0]):
            best = (hops, key)
    return best[1] if best is not None else None


def _hops_to_queue(menu: Menu, start: str, queue: str) -> int | None:
    seen = {start}
    frontier = [start]
    hops = 0
    while frontier:
        nxt: list[str] = []
        for name in frontier:
            node = menu.nodes[name]
            if isinstance(node, QueueNode) and node.queue == queue:
                return hops
            for _, target, _ in edges(name, node, menu.settings):
                if target is not None and target not in seen:
                    seen.add(target)
                    nxt.append(target)
        frontier, hops = nxt, hops + 1
    return None
