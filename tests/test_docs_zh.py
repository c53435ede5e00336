"""Every command, option and file the Chinese pages name exists.

The contractors copy commands from ``docs/zh-CN/`` as they are; a renamed
option or a moved script must fail here, not on a box at a factory. Each
``edge-agent ...`` line of a code block is walked down the typer app (the
subcommand, then each ``--option``), each ``scripts/X.sh`` must exist (and
know the options given to it), and every repository path or relative link
must resolve.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main

from agent.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs" / "zh-CN").glob("*.md"))
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
REPO_PATH = re.compile(
    r"(?<![A-Za-z0-9_./-])((?:agent|config|docs|drivers|scripts|systemd|tests)/[A-Za-z0-9_./-]*)"
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
SEPARATORS = {"&&", "||", "|", ";"}


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of the page's code blocks, as argv lists (comments and ``sudo`` removed)."""
    commands: list[list[str]] = []
    for block in FENCE.findall(markdown):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue  # not shell (JSON, YAML)
            current: list[str] = []
            for token in [*tokens, ";"]:
                if token in SEPARATORS:
                    commands += [current] if current else []
                    current = []
                elif token != "sudo" or current:
                    current.append(token)
    return commands


def cli_problems(argv: list[str], root: Any) -> list[str]:
    """Why ``edge-agent ARGS`` would fail to parse: an unknown subcommand or option.

    ``root`` is the click command typer builds (typer vendors its own click, so
    groups and options are told apart by what they hold, not by class).
    """
    shown = " ".join(argv)
    command, args = root, argv[1:]
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        sub = command.commands.get(args[0])
        if sub is None:
            return [f"{shown}: no command {args[0]!r}"]
        command, args = sub, args[1:]
    if hasattr(command, "commands"):
        return [f"{shown}: {command.name} needs a subcommand"]
    known = {"--help"} | {
        opt
        for param in command.params
        if param.param_type_name == "option"
        for opt in (*param.opts, *param.secondary_opts)
    }
    return [
        f"{shown}: {command.name} has no option {arg.split('=')[0]}"
        for arg in args
        if arg.startswith("-") and arg != "-" and arg.split("=")[0] not in known
    ]


def script_problems(argv: list[str]) -> list[str]:
    """``bash scripts/X.sh --opt`` / ``scripts/X.sh``: the script exists and knows the options."""
    args = argv[1:] if argv[0] == "bash" else argv
    if not args or not args[0].startswith("scripts/"):
        return []
    script = ROOT / args[0]
    if not script.is_file():
        return [f"{' '.join(argv)}: no script {args[0]}"]
    text = script.read_text(encoding="utf-8")
    return [
        f"{' '.join(argv)}: {args[0]} has no option {arg.split('=')[0]}"
        for arg in args[1:]
        if arg.startswith("--") and arg.split("=")[0] not in text
    ]


def path_problems(markdown: str, page: Path) -> list[str]:
    """Repository paths and relative links that lead nowhere."""
    problems = [
        f"no file {p}" for p in REPO_PATH.findall(markdown) if not (ROOT / p.rstrip(".")).exists()
    ]
    links = [t for t in LINK.findall(markdown) if "://" not in t]
    dead = [t for t in links if not (page.parent / t).exists()]
    return problems + [f"link to {t} leads nowhere" for t in dead]


def page_problems(markdown: str, page: Path) -> list[str]:
    """Everything a contractor would trip over on this page."""
    root = typer.main.get_command(app)
    problems = path_problems(markdown, page)
    for argv in shell_commands(markdown):
        if argv[0] == "edge-agent" or argv[0].endswith("/edge-agent"):
            problems += cli_problems(argv, root)
        else:
            problems += script_problems(argv)
    return problems


def test_there_is_a_chinese_quick_start() -> None:
    assert ROOT / "docs" / "zh-CN" / "QUICKSTART.md" in PAGES


def test_every_command_option_and_file_of_the_chinese_pages_exists() -> None:
    for page in PAGES:
        markdown = page.read_text(encoding="utf-8")
        assert page_problems(markdown, page) == [], page.name
        commands = [c for c in shell_commands(markdown) if c[0].endswith("edge-agent")]
        assert len(commands) >= 10, "the commands were not found: is the parser broken?"


def test_a_wrong_command_option_script_or_path_is_caught() -> None:
    page = ROOT / "docs" / "zh-CN" / "SYNTHETIC.md"
    snippet = """
用法：`docs/NOPE.md`，另见 [安装](../INSTALL.md) 和 [没有](../NOPE.md)。

```sh
sudo edge-agent statuz                       # 命令写错
edge-agent status --jsn                      # 选项写错
edge-agent profile shw inovance-md500        # 子命令写错
edge-agent read -c site.yaml m1 --raw \\
  --bytes                                    # 续行里的选项写错
bash scripts/nope.sh
sudo scripts/install.sh --bogus
edge-agent init --from a.yaml --site x -o b.yaml --yes && edge-agent doctor -c b.yaml
mosquitto_sub -p 1883 -t 'edge/#' -v
```
"""
    assert page_problems(snippet, page) == [
        "no file docs/NOPE.md",
        "no file scripts/nope.sh",
        "link to ../NOPE.md leads nowhere",
        "edge-agent statuz: no command 'statuz'",
        "edge-agent status --jsn: status has no option --jsn",
        "edge-agent profile shw inovance-md500: no command 'shw'",
        "edge-agent read -c site.yaml m1 --raw --bytes: read has no option --bytes",
        "bash scripts/nope.sh: no script scripts/nope.sh",
        "scripts/install.sh --bogus: scripts/install.sh has no option --bogus",
    ]


def test_the_readme_links_the_quick_start_on_its_first_screen() -> None:
    first_screen = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:15]
    assert any("docs/zh-CN/QUICKSTART.md" in line for line in first_screen)
