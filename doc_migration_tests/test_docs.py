"""The CLI, its ``--help``, the README and docs/*.md agree.

* Every ``doc-migrate ...`` invocation written in README.md or docs/*.md (inline code spans and
  fenced code blocks), and every one that the package's own messages tell operators to run, names
  a real command and real options of that command, in a position where argparse accepts them.
* docs/operations.md documents every command and every option of ``build_parser()``.
* Every command's ``--help`` works and describes each of its options.
* The exit codes of the cli module's docstring are the EXIT_* constants, the ``--help`` epilog,
  the README's list and docs/troubleshooting.md's table; the CLI's error prefixes are explained
  in docs/troubleshooting.md.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from doc_migration import cli

from .docblocks import join_continuations, split_markdown

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "doc_migration"
README = REPO_ROOT / "README.md"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
TROUBLESHOOTING = REPO_ROOT / "docs" / "troubleshooting.md"
PROG = "doc-migrate"

# Mentions that are wrong on purpose: (file name, exact code text) -> why it is not an invocation.
NOT_INVOCATIONS: dict[tuple[str, str], str] = {
    ("kubernetes.md", "doc-migrate dagster api ..."):
        "the counter-example of what an ENTRYPOINT [\"doc-migrate\"] would turn Dagster's args into",
}

SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "$(", ")"}
ANGLE_PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>\n]*>")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"^(<[^>]*>|[A-Z][A-Z0-9_]*|\.\.\.|…|\$\{?[A-Za-z_]+\}?)$")


@dataclass(frozen=True)
class Mention:
    where: str  # file:line
    text: str  # the code span, line or message it came from
    tokens: tuple[str, ...]  # what follows "doc-migrate"


# --------------------------------------------------------------------------- extraction


def _code_texts(markdown: str) -> list[tuple[int, str, bool]]:
    """(line number, text, is_fenced) of every fenced-block line and every inline code span (spans may
    wrap onto the next line)."""
    fences, prose = split_markdown(markdown)
    out: list[tuple[int, str, bool]] = [(n, line, True) for fence in fences
                                        for n, line in join_continuations(list(fence.body))]
    # Inline spans over the prose, joined so that a span may wrap onto the next line.
    text = "\n".join(line for _, line in prose)
    line_of = [n for n, line in prose for _ in range(len(line) + 1)]
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, flags=re.DOTALL):
        number = line_of[min(m.start(), len(line_of) - 1)] if line_of else 0
        out.append((number, " ".join(m.group(2).split()), False))
    return sorted(out)


def _split(text: str) -> list[str]:
    text = ANGLE_PLACEHOLDER.sub("VALUE", text)  # `<run id>` is a value, not two redirections
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:  # unbalanced quotes in an illustrative line
        return text.split()


def invocations_in(text: str, *, anywhere: bool = True) -> list[tuple[str, ...]]:
    """The argument lists of the ``doc-migrate`` commands in one code text: anywhere in a line of
    shell code, or (``anywhere=False``, for inline spans and messages, which also quote prose like
    "another doc-migrate run") only when the text starts with the command, after ``$ `` or
    environment assignments."""
    tokens = _split(text)
    if not anywhere:
        lead = 0
        while lead < len(tokens) and (tokens[lead] == "$" or ENV_ASSIGNMENT.match(tokens[lead])):
            lead += 1
        if lead >= len(tokens) or tokens[lead] != PROG:
            return []
    found: list[tuple[str, ...]] = []
    for i, token in enumerate(tokens):
        if token == PROG or token.endswith(f"/{PROG}"):
            args: list[str] = []
            for t in tokens[i + 1:]:
                if t in SHELL_OPERATORS or t.startswith(("|", "&", ";", ">", "<", "(", ")")):
                    break
                args.append(t)
            found.append(tuple(args))
    return found


def markdown_mentions(path: Path) -> list[Mention]:
    mentions = []
    for number, text, fenced in _code_texts(path.read_text(encoding="utf-8")):
        if (path.name, text.strip()) in NOT_INVOCATIONS:
            continue
        for args in invocations_in(text, anywhere=fenced):
            mentions.append(Mention(f"{path.relative_to(REPO_ROOT)}:{number}", text.strip(), args))
    return mentions


def _string_values(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals of a module, f-strings with their fields rendered as ``<value>``."""
    out: list[tuple[int, str]] = []
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstring.add(id(value))
                parts.append(value.value if isinstance(value, ast.Constant) and isinstance(value.value, str)
                             else "<value>")
            out.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstring:
            out.append((node.lineno, node.value))
    return out


def package_mentions() -> list[Mention]:
    """Commands the package's messages and docstrings tell operators to run (quoted or in backticks)."""
    mentions = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for number, value in _string_values(tree):
            for m in re.finditer(r"(`+|')(doc-migrate(?: [^`'\n]*)?)\1", value):
                for args in invocations_in(m.group(2), anywhere=False):
                    mentions.append(Mention(f"{path.relative_to(REPO_ROOT)}:{number}", m.group(2), args))
    return mentions


# --------------------------------------------------------------------------- checking


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("doc-migrate has no subcommands")


def _is_placeholder(token: str) -> bool:
    return bool(PLACEHOLDER.match(token.strip("[]{}")))


def problems_with(args: tuple[str, ...]) -> list[str]:
    """Why ``doc-migrate <args>`` is not a valid invocation (empty when it is).

    Placeholders (``KEY``, ``<run id>``, ``...``) stand for values; ``[--flag]`` means an optional
    flag. Options must be spelled out in full (argparse would accept abbreviations; docs must not
    rely on them) and appear where argparse accepts them: global ones before the command.
    """
    root = cli.build_parser()
    commands = _subparsers(root)
    current: argparse.ArgumentParser | None = root
    command: str | None = None
    problems: list[str] = []
    tokens = [t.strip("[]") for t in args]
    tokens = [t for t in tokens if t and t not in ("...", "…", "|")]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if current is None:  # after a placeholder command nothing more can be checked
            break
        if token.startswith("-") and token not in ("-", "--"):
            name, eq, value = token.partition("=")
            action = current._option_string_actions.get(name)
            if action is None:
                where = f"'{command}'" if command else "doc-migrate itself (before the command)"
                problems.append(f"{name} is not an option of {where}")
                continue
            if action.nargs == 0:
                if eq:
                    problems.append(f"{name} takes no value")
                continue
            if not eq:
                if i >= len(tokens):
                    problems.append(f"{name} needs a value")
                    continue
                value = tokens[i]
                i += 1
            if action.choices is not None:
                # An all-caps word could be a choice or a typo of one: only the option's own
                # placeholder name (e.g. LEVEL) or a <...> stands for "one of the choices".
                names = {"LEVEL", action.dest.upper(), str(action.metavar)}
                if value not in action.choices and value not in names and not ANGLE_PLACEHOLDER.match(value):
                    problems.append(f"{name} {value}: not one of {list(action.choices)}")
            elif not _is_placeholder(value):
                if action.type is int and not value.isdigit():
                    problems.append(f"{name} {value}: not an integer")
            continue
        if command is None:
            if token in commands:
                command, current = token, commands[token]
            elif _is_placeholder(token):
                command, current = token, None
            else:
                problems.append(f"{token!r} is not a command (commands: {sorted(commands)})")
                break
            continue
        positionals = [a for a in current._actions if not a.option_strings]
        if not positionals:
            problems.append(f"'{command}' takes no positional argument, got {token!r}")
    return problems


def all_markdown_files() -> list[Path]:
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- tests


def test_the_checker_catches_made_up_commands_and_flags() -> None:
    """Self-test: a documented non-existent flag must make the suite fail."""
    text = ("Run `doc-migrate full --no-such-flag` or\n`doc-migrate\n frobnicate`.\n\n```bash\n"
            "DATABASE_URL=x doc-migrate status --limit 3   # comment\n"
            "doc-migrate full --sources m.yaml | tee log\n```\n")
    mentions = [args for _, code, fenced in _code_texts(text) for args in invocations_in(code, anywhere=fenced)]
    assert mentions == [("full", "--no-such-flag"), ("frobnicate",), ("status", "--limit", "3"),
                        ("full", "--sources", "m.yaml")]
    assert all(problems_with(args) for args in mentions[:3]), [problems_with(a) for a in mentions]
    for good in [("full", "--partition", "rust-00", "--json"), ("--sources", "FILE", "--json", "status"),
                 ("full", "--sources", "m.yaml"), ("status", "--debug", "--log-level", "INFO"),
                 ("rollback", "KEY", "[KEY", "...]", "--yes"), ("--log-level", "INFO", "config"),
                 ("[--sources", "FILE]", "COMMAND", "..."), ("full", "--parallel=2"), ("--help",)]:
        assert problems_with(good) == [], (good, problems_with(good))
    assert problems_with(("full", "--parallel", "two")) and problems_with(("--log-level", "LOUD", "status"))
    assert problems_with(("full", "--part", "rust-00")), "abbreviated options must be refused"


def test_every_documented_invocation_exists() -> None:
    mentions = [m for path in all_markdown_files() for m in markdown_mentions(path)]
    by_file = {m.where.split(":")[0] for m in mentions}
    assert "README.md" in by_file and "docs/operations.md" in by_file, by_file
    bad = [f"{m.where}: `{m.text}`: {'; '.join(p)}" for m in mentions if (p := problems_with(m.tokens))]
    assert not bad, "documented doc-migrate invocations that the CLI does not accept:\n" + "\n".join(bad)


def test_commands_named_in_the_packages_messages_exist() -> None:
    """Error messages and hints ("run `doc-migrate ...`") must name commands that exist."""
    mentions = package_mentions()
    assert mentions, "expected the package's messages to point operators at doc-migrate commands"
    bad = [f"{m.where}: {m.text!r}: {'; '.join(p)}" for m in mentions if (p := problems_with(m.tokens))]
    assert not bad, "messages in the package name doc-migrate invocations that do not exist:\n" + "\n".join(bad)


def test_operations_md_documents_every_command_and_option() -> None:
    root = cli.build_parser()
    commands = _subparsers(root)
    text = OPERATIONS.read_text(encoding="utf-8")
    documented = {m.tokens[i] for m in markdown_mentions(OPERATIONS)
                  for i in range(len(m.tokens)) if m.tokens[i] in commands}
    missing_commands = sorted(set(commands) - documented)
    assert not missing_commands, f"docs/operations.md shows no `doc-migrate <command>` for {missing_commands}"
    missing_options = []
    for name, parser in [("doc-migrate", root), *commands.items()]:
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and not re.search(
                        rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                    missing_options.append(f"{name} {option}")
    assert not missing_options, f"docs/operations.md does not mention: {missing_options}"


# Read only by crash tests and the benchmark, or not configuration at all (USER names who rolled back).
TEST_ONLY_VARIABLES = {"DOC_MIGRATION_CRASH_AT", "DOC_MIGRATION_PAUSE_AT", "DOC_MIGRATION_BENCH_HOME", "USER"}


def test_operations_md_documents_every_environment_variable() -> None:
    """Every variable the package reads (os.environ / env_int) is in docs/operations.md."""
    read: set[str] = set()
    pattern = re.compile(r"""(?:environ(?:\.get)?[\[(]|getenv\(|env_int\(|env_float\()\s*["']([A-Z][A-Z0-9_]+)["']""")
    for path in PACKAGE_DIR.rglob("*.py"):
        if {"testing", "bench"} & set(path.relative_to(PACKAGE_DIR).parts):
            continue
        read |= set(pattern.findall(path.read_text(encoding="utf-8")))
    assert {"DATABASE_URL", "MIGRATION_BATCH_SIZE", "DOC_MIGRATION_SOURCES"} <= read, read
    text = OPERATIONS.read_text(encoding="utf-8")
    missing = sorted(v for v in read - TEST_ONLY_VARIABLES if f"`{v}`" not in text)
    assert not missing, f"docs/operations.md does not document the environment variable(s) {missing}"


@pytest.mark.parametrize("command", sorted(_subparsers(cli.build_parser())))
def test_help_of_every_command_describes_every_option(command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "doc_migration.cli", command, "--help"],
                          capture_output=True, text=True, timeout=60, cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {PROG} {command}"), proc.stdout[:200]
    parser = _subparsers(cli.build_parser())[command]
    undescribed = []
    for action in parser._actions:
        if not action.option_strings:
            continue
        assert any(o in proc.stdout for o in action.option_strings), (command, action.option_strings)
        if not action.help or action.help == argparse.SUPPRESS:
            undescribed.append("/".join(action.option_strings))
    assert not undescribed, f"`{PROG} {command} --help` shows no description for {undescribed}"


def _docstring_exit_codes() -> dict[int, str]:
    doc = cli.__doc__ or ""
    section = doc[doc.index("Exit codes:") + len("Exit codes:"):]
    return {int(code): meaning.strip() for code, meaning in re.findall(r"(\d+) ([^;]+?)(?:;|\.\s*$)", section)}


def test_exit_codes_agree_everywhere() -> None:
    documented = _docstring_exit_codes()
    assert set(documented) == {0, 1, 2, 3, 4, 5, 130}, documented
    constants = {v for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert constants == set(documented), (constants, documented)
    epilog = cli.build_parser().epilog or ""
    assert {int(c) for c in re.findall(r"(\d+) [a-z]", epilog)} == set(documented), epilog
    readme = README.read_text(encoding="utf-8")
    readme_line = readme[readme.index("Exit codes:"):].split("\n\n")[0]
    assert {int(c) for c in re.findall(r"(?<![\w.])(\d+) [a-z]", readme_line)} == set(documented), readme_line

    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    assert "## Exit codes" in text, "docs/troubleshooting.md needs an '## Exit codes' section"
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\|\s*`?(\d+)`?\s*\|([^|]*)\|", section, re.M)}
    assert set(table) == set(documented), f"troubleshooting.md exit code table {sorted(table)} != {sorted(documented)}"
    for code, meaning in documented.items():
        words = [w for w in re.findall(r"[a-z]{5,}", meaning.lower()) if w not in ("another", "some")]
        assert not words or any(w in table[code].lower() for w in words), (code, meaning, table[code])


def test_cli_messages_are_explained_in_troubleshooting() -> None:
    """The fixed parts of what the CLI prints on stderr appear in docs/troubleshooting.md."""
    source = (PACKAGE_DIR / "cli.py").read_text(encoding="utf-8")
    literals = set(re.findall(r'print\(f?"((?:doc-migrate: |failed: |quarantined: |check failed: |step failed: )'
                              r'[^"{]*)', source))
    # main()'s fail(code, message) prints "doc-migrate: " + message.
    literals |= {"doc-migrate: " + m for m in re.findall(r'return fail\(EXIT_\w+(?: if [^,]+)?, f?"([^"{]*)', source)}
    prefixes = {p.strip() for p in literals if len(p.split()) >= 2}
    assert {"doc-migrate: configuration error:", "doc-migrate: database error:"} <= prefixes, prefixes
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    missing = sorted(p for p in prefixes if p not in text)
    assert not missing, f"docs/troubleshooting.md does not explain: {missing}"
