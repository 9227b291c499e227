"""Every option of every ``contactcentre`` command says what it does in ``--help``; tokens say their format."""

from __future__ import annotations

import argparse
import re

import pytest

from contactcentre.cli import _parser, main


def _options(parser: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.Action]]:
    """(command, action) for every option of the parser and its sub-commands, walking the whole tree."""
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _options(sub, f"{name} {sub_name}")
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            found.append((name, action))
    return found


def test_every_option_has_help_text() -> None:
    options = _options(_parser(), "contactcentre")
    assert any(cmd == "contactcentre loadgen" for cmd, _ in options)  # the walk reaches the sub-commands
    missing = [f"{cmd} {a.option_strings[0]}" for cmd, a in options if not (a.help or "").strip()]
    assert not missing, f"options without help text: {missing}"


@pytest.mark.parametrize("command", [["user", "add"], ["user", "token"]])
def test_user_token_commands_say_the_token_format(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"'cc_' and 43 URL-safe base64 characters", text), text
    assert "Authorization: Bearer TOKEN" in text
