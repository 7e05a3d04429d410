"""The ``ssmfab`` command line: invoke's Program, held to what a fleet tool must promise.

invoke's own command line is made for local task runners, and several of its habits are unsafe in front of a
fleet: its core flags (``--dry``, ``--warn-only``, ``-T``, ``--echo``…) are accepted and do nothing to
ssmfab's remote commands; a task that still wants a positional argument takes the next word as it, even
``--help`` (``ssmfab run --tag web --help`` ran ``--help`` on every host); short flags are generated from the
first letter of each option (``-h`` meant ``--ephemeral-key``); and ``--`` drops the words after it. So:

- the only core flags are those ssmfab honours (help, version, listing, completion); any other flag is
  refused in one line, naming it, before anything runs;
- ``--help``/``-h`` anywhere after the task name shows that task's help and runs nothing;
- tasks have no generated short flags (``-h`` is help everywhere);
- ``--`` ends the options: the words after it fill the task's remaining positional arguments, the last one
  taking the rest joined by spaces, as ssh does (``ssmfab run --tag web -- ls -la`` runs ``ls -la``;
  ``ssmfab run --tag web -- --help`` runs ``--help``);
- one task per command: a word left over once the task's arguments are filled is an error, never a second
  task (``ssmfab run --tag web ls deploy`` does not deploy).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from typing import Any

from invoke.config import Config
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.parser.parser import Parser
from invoke.completion.complete import print_completion_script
from invoke.program import Program

HELP_FLAGS = ("--help", "-h")

#: invoke's core flags that ssmfab does not honour: accepted, they would promise what does not happen.
INVOKE_ONLY_FLAGS = {
    "--dry": "--dry", "-R": "--dry", "--echo": "--echo", "-e": "--echo", "--hide": "--hide",
    "--pty": "--pty", "-p": "--pty", "--warn-only": "--warn-only", "-w": "--warn-only",
    "--command-timeout": "--command-timeout", "-T": "--command-timeout",
    "--prompt-for-sudo-password": "--prompt-for-sudo-password", "--write-pyc": "--write-pyc",
    "--config": "--config", "-f": "--config", "--debug": "--debug", "-d": "--debug",
    "--collection": "--collection", "-c": "--collection", "--search-root": "--search-root", "-r": "--search-root",
    "--no-dedupe": "--no-dedupe",
}  # fmt: skip


class CommandLineError(Exception):
    """A mistake on the command line, found before anything ran."""


@dataclass
class TaskWords:
    """What the words after the task name ask for."""

    task: str
    help: bool = False
    #: Positional arguments given before ``--``.
    positionals: int = 0
    #: Words after ``--``.
    rest: list[str] = field(default_factory=list)


def _refuse_flag(flag: str, task: str | None) -> CommandLineError:
    name = flag.partition("=")[0]
    if name in INVOKE_ONLY_FLAGS:
        return CommandLineError(f"{INVOKE_ONLY_FLAGS[name]} is an invoke option that ssmfab does not honour: nothing was run")
    where = f"{task}: " if task else ""
    return CommandLineError(
        f"{where}unknown option {name!r} (`ssmfab {task or ''} --help` lists the options; a word that starts "
        "with - goes after --)".replace("  ", " ")
    )


def read_task_words(words: list[str], rest: list[str], contexts: Any) -> TaskWords | None:
    """Check the words from the task name on (those before ``--``; ``rest``: those after) against the task's
    options, the way invoke's parser will read them; raise CommandLineError on anything it would misread."""
    if not words:
        if rest:
            raise CommandLineError("words after -- need a task before them (ssmfab --list shows the tasks)")
        return None
    task = words[0]
    if task.startswith("-") and task != "-":
        raise _refuse_flag(task, None)
    if task not in contexts:
        raise CommandLineError(f"no task named {task!r} (ssmfab --list shows them)")
    found = TaskWords(task=task, rest=list(rest))
    if any(word in HELP_FLAGS for word in words[1:]):
        found.help = True
        return found
    context: ParserContext = contexts[task]
    wanted = len(context.positional_args)
    index = 1
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("-") and word != "-":
            name, equals, _ = word.partition("=")
            if name in context.flags:
                if context.flags[name].takes_value and not equals:
                    if index >= len(words) or words[index] in context.flags:
                        raise CommandLineError(f"{task}: {name} needs a value")
                    index += 1  # the value, whatever it looks like (invoke reads it so too)
            elif name not in context.inverse_flags:
                raise _refuse_flag(word, task)
            continue
        if found.positionals >= wanted:
            raise CommandLineError(
                f"{task}: unexpected argument {word!r}: ssmfab runs one task per command; quote a command "
                "with spaces as one argument (or put it after --)"
            )
        found.positionals += 1
    if rest and found.positionals >= wanted:
        raise CommandLineError(f"{task}: takes no more arguments, but got {' '.join(rest)!r} after --")
    return found


def fill_positionals_after_dashes(context: ParserContext, words: TaskWords) -> None:
    """Give the task's remaining positional arguments the words after ``--``: one word each, the last
    argument the rest joined by spaces (as ssh joins a command's words)."""
    remaining = context.positional_args[words.positionals :]
    if not words.rest:
        return
    for position, argument in enumerate(remaining):
        if position == len(remaining) - 1:
            argument.value = " ".join(words.rest[position:])
            return
        if position >= len(words.rest):
            return
        argument.value = words.rest[position]


class ProgramConfig(Config):
    """invoke's configuration for the ``ssmfab`` program: none of invoke's own files (ssmfab has its own
    config, config.py); invoke settings come only from ``SSMFAB_``-prefixed variables, which tasks refuse."""

    prefix = "ssmfab"
    #: Tells the task wrapper (cli.ssmfab_task) that this program's parser has checked every word.
    ssmfab_program = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["lazy"] = True
        super().__init__(*args, **kwargs)


class SSMFabProgram(Program):
    """invoke's Program with only the flags ssmfab honours, help that wins, ``--`` that ends options."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("config_class", ProgramConfig)
        super().__init__(**kwargs)

    def core_args(self) -> list[Argument]:
        keep = {"help", "version", "list", "list-depth", "list-format", "complete", "print-completion-script"}
        return [arg for arg in super().core_args() if arg.name in keep]

    def parse_core(self, argv: list[str] | None) -> None:
        # invoke's version also reads --write-pyc and --debug, which this program does not have.
        self.normalize_argv(argv)
        self.parse_core_args()
        sys.dont_write_bytecode = True  # as invoke without --write-pyc
        if self.args.version.value:
            self.print_version()
            raise Exit
        if self.args["print-completion-script"].value:
            print_completion_script(shell=self.args["print-completion-script"].value, names=self.binary_names)
            raise Exit

    def update_config(self, merge: bool = True) -> None:
        # invoke's version reads flags this program does not have (--warn-only, --pty, --config…).
        if merge:
            self.config.merge()

    def parse_tasks(self) -> None:
        if self.args.complete.value:
            super().parse_tasks()  # completion reads the words after -- itself
            return
        argv = list(self.argv[1:])
        rest = argv[argv.index("--") + 1 :] if "--" in argv else []
        self.parser = self._make_parser()
        try:
            words = read_task_words(list(self.core.unparsed), rest, self.parser.contexts)
        except CommandLineError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        if words is not None and words.help:
            self.print_task_help(words.task)
            raise Exit
        if words is not None:
            context = self.parser.contexts[words.task]
            fill_positionals_after_dashes(context, words)
            if not self.args.help.value:
                # invoke's parser deep-copies every task's context (~20 flags each) for each parse: most of a
                # warm command's time in the keeper. One task per command is all this program runs, so the
                # parser gets that task's context only (``--help TASK`` still needs them all).
                self.parser = Parser(initial=self.initial_context, contexts=[context])
        result = self.parser.parse_argv(self.core.unparsed)
        self.core_via_tasks = result.pop(0)
        self._update_core_context(context=self.core[0], new_args=self.core_via_tasks.args)
        self.tasks = result

    def print_task_help(self, name: str) -> None:
        context = self.parser.contexts[name]
        positionals = " ".join(arg.name.upper() for arg in context.positional_args)
        print(f"Usage: {self.binary} {name} [--options] {positionals}".rstrip())
        print("")
        docstring = inspect.getdoc(self.collection[name]) or "none"
        for line in docstring.splitlines():
            print(self.leading_indent + line if line.strip() else "")
        print("")
        if context.positional_args:
            print(self.leading_indent + "Options end at --: words after it are arguments even if they start with -.")
            print("")
        print("Options:")
        tuples = context.help_tuples()
        if tuples:
            self.print_columns(tuples)
        else:
            print(self.leading_indent + "none")
            print("")
