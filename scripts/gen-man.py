#!/usr/bin/env python3
"""Write docs/bundle.1 (a man page) from the CLI's own help, so the two cannot say different things.

    python scripts/gen-man.py            # rewrite docs/bundle.1
    python scripts/gen-man.py --check    # exit 1 if docs/bundle.1 is not what the help says now
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "docs" / "bundle.1"
sys.path.insert(0, str(REPO))

from bundlecore import __version__  # noqa: E402
from bundlecli.main import cli  # noqa: E402
from bundlecli.registry import COMMANDS, EXIT_CODES  # noqa: E402
from bundlecore.errors import MEANINGS  # noqa: E402
from generated_doc import write_or_check  # noqa: E402  (scripts/ is on sys.path when run)

# What each environment variable the code reads means. The names are found in the code itself
# (env_vars_read); one read there but described nowhere here fails the generator, so the page
# cannot miss one. TEST_HOOKS are read only by the test suite's runs and are not shown.
ENVIRONMENT = {
    "BUNDLE_KEYS": "trust store directory (default /etc/bundle/keys)",
    "BUNDLE_STATE_DIR": "importer state directory (default /var/lib/bundle)",
    "BUNDLE_SITE_DIR": "directory of the site settings NAME.toml (default /etc/bundle/apps)",
    "BUNDLE_SYSTEMD_DIR": "where import --systemd-unit writes a Podman container's unit (default /etc/systemd/system)",
    "BUNDLE_PROGRESS_INTERVAL": "seconds between progress lines when stderr is not a terminal (default 10)",
    "DOCKER_HOST": "the Docker engine to use (default unix:///var/run/docker.sock)",
    "DOCKER_CONFIG": "directory of the Docker client config.json holding registry logins (default ~/.docker)",
    "GITHUB_TOKEN": "token for GitHub's API (bundle check: the higher rate limit)",
    "GNUPGHOME": "keyring holding the signing key (build, approve)",
    "SUDO_USER": "the person recorded in the audit log when run through sudo",
}
TEST_HOOKS = {"BUNDLE_CRASH_AT", "BUNDLE_CRASH_WHEN", "BUNDLE_CRASH_SIGNAL", "BUNDLE_BACKOFF_BASE", "BUNDLE_INLINE_SOAK"}
PACKAGES = ("bundlecore", "bundler", "importer", "bundlecli")


def env_vars_read() -> set[str]:
    """Every environment variable the shipped code names: os.environ[...] / .get(...) of a string,
    a module constant `*_ENV = "NAME"` read that way, and GNUPGHOME (read by gpg, set by --gnupghome)."""
    import ast
    found = {"GNUPGHOME"}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                        isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets):
                    found.add(node.value.value)
                arg = None
                if isinstance(node, ast.Subscript) and _is_environ(node.value):
                    arg = node.slice
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr == "get" and _is_environ(node.func.value) and node.args):
                    arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def _is_environ(node) -> bool:
    import ast
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environment() -> list[tuple[str, str]]:
    names = env_vars_read() - TEST_HOOKS
    missing = sorted(names - set(ENVIRONMENT))
    if missing:
        raise SystemExit(f"gen-man.py: describe {', '.join(missing)} in ENVIRONMENT (read by the code)")
    return [(n, ENVIRONMENT[n]) for n in sorted(names)]


def state_files() -> list[tuple[str, str]]:
    """The state dir's layout, from importer/state.py's docstring (the one place it is written)."""
    import importer.state as state
    doc = (state.__doc__ or "").split("Layout", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    rows: list[tuple[str, str]] = []
    for line in doc:
        name, _, text = line.strip().partition("  ")
        if line.startswith("  ") and not line.startswith("   "):
            rows.append((name, text.strip()))
        elif rows:
            rows[-1] = (rows[-1][0], f"{rows[-1][1]} {line.strip()}")
    return [(f"{state.DEFAULT_STATE_DIR}/{n}", t) for n, t in rows]


def esc(text: str) -> str:
    """roff-safe text: backslashes doubled, a leading dot or quote neutralised, dashes literal."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line for line in text.split("\n"))


def options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record:
            out += [".TP", f"\\fB{esc(record[0])}\\fR", esc(record[1] or "")]
    return out


def render() -> str:
    root = click.Context(cli, info_name="bundle", **cli.context_settings)
    lines = [f'.TH BUNDLE 1 "" "bundle {__version__}" "User Commands"',
             ".\\\" Generated by scripts/gen-man.py from the command help; do not edit.",
             ".SH NAME", "bundle \\- " + esc(cli.help.split("\n")[0]),
             ".SH SYNOPSIS", "\\fBbundle\\fR [\\fB\\-\\-debug\\fR] [\\fB\\-q\\fR|\\fB\\-v\\fR] "
             "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]",
             ".SH DESCRIPTION", esc(" ".join(cli.help.split("\n\n")[0].split())),
             ".PP", esc("The global options are accepted anywhere on the command line."),
             ".SH GLOBAL OPTIONS", *options(cli, root),
             ".SH COMMANDS"]
    for name in sorted(COMMANDS):
        cmd = cli.get_command(root, name)
        ctx = click.Context(cmd, info_name=name, parent=root)
        usage = " ".join(cmd.collect_usage_pieces(ctx))
        lines += [".SS " + esc(f"bundle {name} {usage}".strip()),
                  esc(" ".join((cmd.help or "").split()))]
        lines += options(cmd, ctx)
    lines += [".SH EXIT STATUS"]
    for code, meaning in sorted(MEANINGS.items()):  # the one table of bundlecore.errors
        verbs = [v for v in sorted(EXIT_CODES) if code in EXIT_CODES[v]]
        lines += [".TP", f"\\fB{int(code)}\\fR", esc(meaning),
                  ".br", esc("every command" if len(verbs) == len(EXIT_CODES) else "from: " + ", ".join(verbs))]
    lines += [".SH ENVIRONMENT"]
    for var, meaning in environment():
        lines += [".TP", f"\\fB{var}\\fR", esc(meaning)]
    lines += [".SH SHELL COMPLETION",
              esc('bash: eval "$(_BUNDLE_COMPLETE=bash_source bundle)" in ~/.bashrc; '
                  "zsh: zsh_source; fish: fish_source (click's completion). Verbs, options, the installed "
                  "apps' names (uninstalled ones for restore) and rollback --to's kept generations."),
              ".SH FILES"]
    for path, meaning in [("/etc/bundle/keys", "the trust store: public keys, policy.toml, host-policy.toml"),
                          ("/etc/bundle/apps/NAME.toml", "site settings of app NAME, over its bundle's run settings"),
                          *state_files()]:
        lines += [".TP", f"\\fB{esc(path)}\\fR", esc(meaning)]
    lines += [".SH SEE ALSO", esc("docs/cli.md (every command, exit codes, --json), docs/metrics.md, docs/audit.md, "
                                  "docs/architecture.md; installed by the offline kit in PREFIX/share/doc/bundle")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(MAN, render(), argv, "gen-man.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
