"""One call in the IVR: a pure state machine over a ``Menu``.

Sans-I/O like the router: inputs carry ``now_ms``; outputs are lists of actions; timers are data
(``next_deadline()`` / ``advance(now_ms)``). Every input first fires the timers due at or before its instant,
so a key pressed exactly at a timeout's deadline comes after the timeout.

Prompts: the media server reports the end of each ``Play`` with ``prompt_done(now_ms, seq)``; ``seq`` lets a
late report for a prompt that barge-in already replaced be ignored. A report that never comes is covered by
``settings.prompt_max_ms``, after which the prompt counts as played — so a session without media (a test, the
simulator) may either call ``prompt_done`` or just ``advance`` the clock.

States and their moves are ``SESSION_TRANSITIONS``; which input each state takes is ``SESSION_INPUTS``. Both
are checked on every step, and a pair not listed raises ``IllegalTransition``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from contactcentre.acd import IllegalTransition
from contactcentre.telephony.ivr import actions as A
from contactcentre.telephony.ivr.menu import (
    CALLBACK_TIMES,
    DTMF_KEYS,
    CallbackNode,
    CollectNode,
    EndNode,
    HangupNode,
    HoursNode,
    LanguageNode,
    Menu,
    MenuNode,
    PromptNode,
    QueueNode,
    SelfServiceNode,
)

NEW = "new"
PLAYING = "playing"  # a prompt is playing; keys count only if it allows barge-in
WAITING_INPUT = "waiting_input"  # a menu (or callback question) waits for one key
COLLECTING = "collecting"  # digits are being collected
DONE = "done"
SESSION_STATES = (NEW, PLAYING, WAITING_INPUT, COLLECTING, DONE)

# (state, step) -> next state. Every menu and collect starts with a prompt, so waiting and collecting are only
# ever entered from PLAYING (after the prompt, or by barge-in); every live state may finish.
SESSION_TRANSITIONS: dict[tuple[str, str], str] = {
    (NEW, "play"): PLAYING,
    (NEW, "finish"): DONE,  # the start node leads straight to a queue or a hang-up
    (PLAYING, "play"): PLAYING,  # the next prompt of a sequence, or the next node's
    (PLAYING, "listen"): WAITING_INPUT,
    (PLAYING, "collect"): COLLECTING,
    (PLAYING, "finish"): DONE,
    (WAITING_INPUT, "play"): PLAYING,
    (WAITING_INPUT, "finish"): DONE,
    (COLLECTING, "play"): PLAYING,
    (COLLECTING, "finish"): DONE,
}
SESSION_STEPS = tuple(sorted({s for _, s in SESSION_TRANSITIONS}))

# (state, input) -> "handle" or "ignore". After the end, media reports and keys still race in: they are
# ignored rather than refused, so the runtime need not check ``done`` first. Before ``start`` only a hang-up
# makes sense; anything else is a wiring mistake.
SESSION_INPUTS: dict[tuple[str, str], str] = {
    (NEW, "start"): "handle",
    (NEW, "hangup"): "handle",
    (NEW, "advance"): "ignore",
    **{(s, i): "handle" for s in (PLAYING, WAITING_INPUT, COLLECTING) for i in ("dtmf", "prompt_done", "hangup")},
    **{(s, "advance"): "handle" for s in (PLAYING, WAITING_INPUT, COLLECTING)},
    **{(DONE, i): "ignore" for i in ("dtmf", "prompt_done", "hangup", "advance")},
}
SESSION_INPUT_NAMES = ("start", "dtmf", "prompt_done", "hangup", "advance")

Hook = Callable[..., Any]


class IvrError(ValueError):
    """An input the session refuses (time running backwards, a key that is not a telephone key)."""


class HookResult(msgspec.Struct, frozen=True):
    """What a custom self-service hook returns: the outcome picks the branch, variables fill prompts."""

    outcome: str
    variables: dict[str, str] = {}


@dataclass(slots=True)
class _Ask:
    """The question the caller is being asked: one key from ``keys`` or a string of digits."""

    phase: str  # menu | collect | cb_confirm | cb_number | cb_when
    prompt: str
    digits: bool
    keys: frozenset[str] = frozenset()
    min_digits: int = 1
    max_digits: int = 1
    terminator: str = ""
    timeout_ms: int = 0
    inter_digit_ms: int = 0
    max_retries: int = 0
    invalid_prompt: str | None = None
    timeout_prompt: str | None = None
    barge_in: bool = True
    failures: int = 0
    buffer: list[str] = field(default_factory=list)


class IvrSession:
    """One call's walk through a menu.

    ``hooks`` are plain callables, so the session stays pure: ``case_status(case_number) -> status | None``,
    ``opening_hours(now_ms) -> text``, and custom ones ``fn(variables, now_ms) -> HookResult``. A hook that is
    missing or raises takes the self-service node's ``otherwise`` branch: a broken back-end must not drop calls.
    """

    def __init__(
        self,
        menu: Menu,
        call_id: str,
        ani: str | None,
        now_ms: int,
        hooks: Mapping[str, Hook] | None = None,
    ) -> None:
        self.menu = menu
        self.call_id = call_id
        self.ani = ani or ""
        self.hooks = dict(hooks or {})
        self.created_ms = now_ms
        self.now_ms = now_ms
        self.state = NEW
        self.language = menu.default_language
        self.variables: dict[str, str] = {"ani": self.ani}
        self.collected: dict[str, str] = {}  # what the caller keyed in (collect nodes): goes to the agent
        self.path: list[str] = []  # menu choices as "node>key"
        self.node = ""
        self.outcome: str | None = None
        self.served = False  # a self-service hook answered the caller's question
        self.facts: list[A.IvrFact] = []
        self._out: list[A.IvrAction] = []
        self._decided: str | None = None  # the outcome once the end is certain (a goodbye may still play)
        self._ask: _Ask | None = None
        self._prompts: list[str] = []  # still to play, in order
        self._after = ""  # what happens when the prompts are done: next | listen | collect | terminal
        self._seq = 0
        self._timer: int | None = None
        self._limit: int | None = None
        self._number = ""  # callback number being confirmed
        self._in_node = False
        # An entry that ended at max_digits leaves the '#' the prompt asked for still to come: it belongs to that
        # entry, not to the next menu (where it would count as a wrong key). (key, until when)
        self._swallow: tuple[str, int] = ("", 0)

    # ------------------------------------------------------------------------------------------- inputs

    @property
    def done(self) -> bool:
        return self.state == DONE

    def start(self, now_ms: int) -> list[A.IvrAction]:
        self._input("start", now_ms)
        self._limit = now_ms + self.menu.settings.max_call_ms
        self._enter(self.menu.start)
        return self._flush()

    def dtmf(self, digit: str, now_ms: int) -> list[A.IvrAction]:
        if len(digit) != 1 or digit not in DTMF_KEYS:
            raise IvrError(f"call {self.call_id!r}: {digit!r} is not a telephone key")
        swallow, until = self._swallow
        handle = self._input("dtmf", now_ms)
        self._swallow = ("", 0)
        if handle and not (digit == swallow and now_ms <= until):
            if self.state == WAITING_INPUT:
                self._answer(digit)
            elif self.state == COLLECTING:
                self._digit(digit)
            elif self._ask is not None and self._ask.barge_in and self._after in ("listen", "collect"):
                self._prompts.clear()  # barge-in: the next action replaces the prompt
                if self._ask.digits:
                    self._collecting()
                    self._digit(digit)
                else:
                    self._answer(digit)
            # else: a key during a prompt that takes none (type-ahead is not kept)
        return self._flush()

    def prompt_done(self, now_ms: int, seq: int | None = None) -> list[A.IvrAction]:
        if self._input("prompt_done", now_ms) and self.state == PLAYING and seq in (None, self._seq):
            self._prompt_ended()
        return self._flush()

    def hangup(self, now_ms: int) -> list[A.IvrAction]:
        """The caller hung up."""
        if self._input("hangup", now_ms):
            if self.node:
                self._exit("hangup")
            self._finish(self._decided or ("self_served" if self.served else "abandoned"))
        return self._flush()

    def next_deadline(self) -> int | None:
        if self.state in (NEW, DONE):
            return None
        due = [t for t in (self._timer, self._limit) if t is not None]
        return min(due) if due else None

    def advance(self, now_ms: int) -> list[A.IvrAction]:
        """Fire every timer due at or before ``now_ms``, each at its own instant."""
        self._input("advance", now_ms)
        return self._flush()

    # ------------------------------------------------------------------------------------------- machinery

    def _input(self, name: str, now_ms: int) -> bool:
        """Check the input against the table and bring the clock (and due timers) up to ``now_ms``.
        True if the input is to be handled."""
        verdict = SESSION_INPUTS.get((self.state, name))
        if verdict is None:
            raise IllegalTransition("ivr session", self.call_id, self.state, name)
        if now_ms < self.now_ms:
            raise IvrError(f"call {self.call_id!r}: {name} at {now_ms} ms is before the session's clock")
        self._fire_due(now_ms)
        self.now_ms = now_ms
        return verdict == "handle" and self.state != DONE and name != "advance"

    def _fire_due(self, now_ms: int) -> None:
        while (due := self.next_deadline()) is not None and due <= now_ms:
            self.now_ms = due
            if self._timer is not None and self._timer == due:
                self._timer = None
                self._timed_out()
            else:
                self._limit = None
                self._time_limit()

    def _step(self, step: str) -> None:
        nxt = SESSION_TRANSITIONS.get((self.state, step))
        if nxt is None:
            raise IllegalTransition("ivr session", self.call_id, self.state, step)
        self.state = nxt

    def _flush(self) -> list[A.IvrAction]:
        out, self._out = self._out, []
        return out

    def _fact(self, cls: type[A.Fact], **kw: Any) -> None:
        self.facts.append(cls(call_id=self.call_id, at_ms=self.now_ms, **kw))

    def _exit(self, cause: str) -> None:
        if self._in_node:  # a callback's confirmation plays after it has been left (cause "callback")
            self._in_node = False
            self._fact(A.NodeExited, node=self.node, cause=cause)

    def _go(self, target: str, cause: str) -> None:
        self._exit(cause)
        self._enter(target)

    def _finish(self, outcome: str) -> None:
        self._step("finish")
        self.outcome = outcome
        self._timer = self._limit = None
        self._ask = None
        self._prompts.clear()
        self._fact(A.SessionFinished, outcome=outcome, node=self.node, path=self.path_text)  # type: ignore[arg-type]

    @property
    def path_text(self) -> str:
        return "/".join(self.path)

    # ------------------------------------------------------------------------------------------- nodes

    def _enter(self, name: str) -> None:
        self.node = name
        self._in_node = True
        self._ask = None
        self._fact(A.NodeEntered, node=name)
        node = self.menu.node(name)
        if isinstance(node, PromptNode):
            self._play([node.prompt], "next")
        elif isinstance(node, MenuNode):
            self._ask = self._question("menu", node.prompt, node, keys=frozenset(node.options))
            self._play([node.prompt], "listen")
        elif isinstance(node, CollectNode):
            self._ask = self._question("collect", node.prompt, node, digits=True)
            self._ask.min_digits, self._ask.max_digits = node.min_digits, node.max_digits
            self._ask.terminator = node.terminator
            self._play([node.prompt], "collect")
        elif isinstance(node, HoursNode):
            is_open = self.menu.calendars[node.calendar].is_open(self.now_ms)
            self._go(node.open if is_open else node.closed, "open" if is_open else "closed")
        elif isinstance(node, LanguageNode):
            self.language = node.language
            self._go(node.next, "next")
        elif isinstance(node, SelfServiceNode):
            self._self_service(node)
        elif isinstance(node, CallbackNode):
            if self.ani and node.confirm_prompt:
                self._ask_callback("cb_confirm", node.confirm_prompt, node)
            else:
                self._ask_callback("cb_number", node.number_prompt, node)
        elif isinstance(node, HangupNode):
            self._decided = "self_served" if self.served else "ivr_hangup"
            self._terminal_after(node.prompt)
        else:
            assert isinstance(node, QueueNode | EndNode)
            self._terminal_after(node.prompt)

    def _terminal_after(self, prompt: str | None) -> None:
        if prompt:
            self._play([prompt], "terminal")
        else:
            self._terminal()

    def _terminal(self) -> None:
        node = self.menu.node(self.node)
        if isinstance(node, QueueNode):
            skills = {**node.skills, **node.skills_by_language.get(self.language, {})}
            attrs = {**self._attributes(), **node.attributes}
            self._out.append(
                A.Enqueue(self.call_id, queue=node.queue, priority=node.priority, skills=skills, attributes=attrs)
            )
            self._exit("queued")
            self._finish("queued")
        elif isinstance(node, EndNode):
            attrs = {**self._attributes(), **node.attributes}
            self._out.append(A.Handoff(self.call_id, target=node.handoff, attributes=attrs))
            self._exit("handed_off")
            self._finish("handed_off")
        elif isinstance(node, CallbackNode):  # its confirmation has played
            self._out.append(A.Hangup(self.call_id, reason="callback"))
            self._finish("callback")
        else:
            reason = node.reason if isinstance(node, HangupNode) else "ivr"
            self._out.append(A.Hangup(self.call_id, reason=reason))
            self._exit("ivr_hangup")
            self._finish(self._decided or "ivr_hangup")

    def _attributes(self) -> dict[str, str]:
        return {
            **self.collected,
            "ivr_menu": self.menu.name,
            "ivr_path": self.path_text,
            "language": self.language,
        }

    def _self_service(self, node: SelfServiceNode) -> None:
        outcome, found = self._call_hook(node)
        self.variables.update(found)
        target = node.outcomes.get(outcome or "")
        if target is None:
            self._go(node.otherwise, "otherwise")
            return
        assert outcome is not None
        if outcome in (node.served if node.served is not None else node.outcomes):
            self.served = True
            self._out.append(A.SelfServiceDone(self.call_id, node=self.node, hook=node.hook, outcome=outcome))
        self._go(target, outcome)

    def _call_hook(self, node: SelfServiceNode) -> tuple[str | None, dict[str, str]]:
        fn = self.hooks.get(node.hook)
        if fn is None:
            return None, {}
        try:
            if node.hook == "case_status":
                status = fn(self.variables.get(node.input or "", ""))
                return ("found", {"status": str(status)}) if status is not None else ("not_found", {})
            if node.hook == "opening_hours":
                return "done", {"opening_hours": str(fn(self.now_ms))}
            got = fn(dict(self.variables), self.now_ms)
            if not isinstance(got, HookResult):
                return None, {}
            return got.outcome, {k: str(v) for k, v in got.variables.items()}
        except Exception:  # a failing back-end sends the caller down ``otherwise`` (usually to a person)
            return None, {}

    # ------------------------------------------------------------------------------------------- questions

    def _question(
        self,
        phase: str,
        prompt: str,
        node: MenuNode | CollectNode | CallbackNode,
        *,
        keys: frozenset[str] = frozenset(),
        digits: bool = False,
    ) -> _Ask:
        st = self.menu.settings
        return _Ask(
            phase=phase,
            prompt=prompt,
            digits=digits,
            keys=keys,
            timeout_ms=node.timeout_ms or st.timeout_ms,
            inter_digit_ms=getattr(node, "inter_digit_ms", None) or st.inter_digit_ms,
            max_retries=node.max_retries if node.max_retries is not None else st.max_retries,
            invalid_prompt=node.invalid_prompt or st.invalid_prompt,
            timeout_prompt=node.timeout_prompt or st.timeout_prompt,
            barge_in=getattr(node, "barge_in", True),
        )

    def _ask_callback(self, phase: str, prompt: str, node: CallbackNode) -> None:
        if phase == "cb_number":
            self._ask = self._question(phase, prompt, node, digits=True)
            self._ask.max_digits, self._ask.terminator = node.number_max_digits, "#"
            self._play([prompt], "collect")
        else:
            keys = frozenset({"1", "2"}) if phase == "cb_confirm" else frozenset(node.times)
            self._ask = self._question(phase, prompt, node, keys=keys)
            self._play([prompt], "listen")

    def _play(self, prompts: list[str], after: str) -> None:
        self._prompts = list(prompts)
        self._after = after
        self._play_next()

    def _play_next(self) -> None:
        pid = self._prompts.pop(0)
        self._step("play")
        self._seq += 1
        names = self.menu.prompt_variables(pid)
        self._out.append(
            A.Play(
                self.call_id,
                seq=self._seq,
                prompt_id=pid,
                text=self.menu.render(pid, self.language, self.variables),
                language=self.language,
                variables={n: self.variables.get(n, "") for n in names},
                barge_in=self._ask is not None and self._ask.barge_in and self._after in ("listen", "collect"),
            )
        )
        self._timer = self.now_ms + self.menu.settings.prompt_max_ms

    def _prompt_ended(self) -> None:
        if self._prompts:
            self._play_next()
        elif self._after == "next":
            node = self.menu.node(self.node)
            assert isinstance(node, PromptNode)
            self._go(node.next, "next")
        elif self._after == "listen":
            assert self._ask is not None
            self._step("listen")
            self._timer = self.now_ms + self._ask.timeout_ms
            self._out.append(
                A.CollectDigits(self.call_id, node=self.node, max_digits=1, timeout_ms=self._ask.timeout_ms)
            )
        elif self._after == "collect":
            self._collecting()
        else:
            self._terminal()

    def _collecting(self) -> None:
        ask = self._ask
        assert ask is not None
        self._step("collect")
        ask.buffer.clear()
        self._timer = self.now_ms + ask.timeout_ms
        self._out.append(
            A.CollectDigits(
                self.call_id,
                node=self.node,
                max_digits=ask.max_digits,
                terminator=ask.terminator,
                timeout_ms=ask.timeout_ms,
                inter_digit_ms=ask.inter_digit_ms,
            )
        )

    def _timed_out(self) -> None:
        if self.state == PLAYING:  # the media server never reported the prompt's end
            self._prompt_ended()
        elif self.state == COLLECTING and self._ask is not None and self._ask.buffer:
            self._complete()  # the caller stopped typing: what they typed is the entry
        else:
            self._failed("timeout")

    def _time_limit(self) -> None:
        self._exit("time_limit")
        self._prompts.clear()
        target = self.menu.settings.on_time_limit
        if target is not None and self._decided is None:
            self._enter(target)
        else:
            self._out.append(A.Hangup(self.call_id, reason="time_limit"))
            self._finish(self._decided or ("self_served" if self.served else "ivr_hangup"))

    def _answer(self, digit: str) -> None:
        ask = self._ask
        assert ask is not None
        if digit not in ask.keys:
            self._failed("invalid")
            return
        node = self.menu.node(self.node)
        if isinstance(node, MenuNode):
            self.path.append(f"{self.node}>{digit}")
            self._go(node.options[digit], f"option:{digit}")
            return
        assert isinstance(node, CallbackNode)
        if ask.phase == "cb_confirm":
            if digit == "1":
                self._callback_number(node, self.ani)
            else:
                self._ask_callback("cb_number", node.number_prompt, node)
        else:
            self._callback_request(node, self._callback_at(node, node.times[digit]))

    def _digit(self, digit: str) -> None:
        ask = self._ask
        assert ask is not None
        if digit == ask.terminator and ask.terminator:
            self._complete()
            return
        ask.buffer.append(digit)
        if len(ask.buffer) >= ask.max_digits:
            terminator, until = ask.terminator, self.now_ms + ask.inter_digit_ms
            self._complete()
            self._swallow = (terminator, until)
        else:
            self._timer = self.now_ms + ask.inter_digit_ms

    def _complete(self) -> None:
        ask = self._ask
        assert ask is not None
        entry = "".join(ask.buffer)
        ask.buffer.clear()
        pattern = self.menu.patterns[self.node]
        if not ask.min_digits <= len(entry) <= ask.max_digits or not pattern.fullmatch(entry):
            self._failed("invalid")
            return
        node = self.menu.node(self.node)
        if isinstance(node, CollectNode):
            self.variables[node.var] = self.collected[node.var] = entry
            self._go(node.next, "digits")
        else:
            assert isinstance(node, CallbackNode)
            self._callback_number(node, entry)

    def _failed(self, cause: str) -> None:
        ask = self._ask
        assert ask is not None
        ask.failures += 1
        ask.buffer.clear()
        self._fact(A.InputFailed, node=self.node, cause=cause, attempt=ask.failures)  # type: ignore[arg-type]
        if ask.failures > ask.max_retries:
            node = self.menu.node(self.node)
            target = getattr(node, "on_exhausted", None) or self.menu.settings.on_exhausted
            assert target is not None  # checked at load
            self._go(target, cause)
            return
        extra = ask.timeout_prompt if cause == "timeout" else ask.invalid_prompt
        after = "collect" if ask.digits else "listen"
        self._play([*([extra] if extra else []), ask.prompt], after)

    # ------------------------------------------------------------------------------------------- callback

    def _callback_number(self, node: CallbackNode, number: str) -> None:
        self._number = number
        if node.when_prompt:
            self._ask_callback("cb_when", node.when_prompt, node)
        else:
            self._callback_request(node, None)

    def _callback_at(self, node: CallbackNode, when: str) -> int | None:
        m = CALLBACK_TIMES.match(when)
        assert m is not None
        if when == "asap":
            return None
        if when == "next_open":
            assert node.calendar is not None
            cal = self.menu.calendars[node.calendar]
            return None if cal.is_open(self.now_ms) else cal.add(self.now_ms, 0)
        return self.now_ms + int(m.group(2)) * 60_000

    def _callback_request(self, node: CallbackNode, at_ms: int | None) -> None:
        self.variables["callback_number"] = self._number
        attrs = {**self._attributes(), **node.attributes}
        self._out.append(
            A.RequestCallback(
                self.call_id,
                number=self._number,
                at_ms=at_ms,
                queue=node.queue,
                priority=node.priority,
                attributes=attrs,
            )
        )
        self._decided = "callback"
        self._exit("callback")
        self._ask = None
        if node.done_prompt:
            self._play([node.done_prompt], "terminal")
        else:
            self._terminal()

    def __repr__(self) -> str:
        return f"IvrSession({self.call_id} {self.state} at {self.node or '-'} -> {self.outcome or '…'})"
