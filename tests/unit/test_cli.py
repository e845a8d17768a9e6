"""The command registry: `bundle --help` lists every verb without importing any command module."""

import importlib
import subprocess
import sys

from bundlecli.registry import COMMANDS


def test_help_lists_every_verb_without_importing_a_command_module():
    probe = ("import sys\nfrom bundlecli.main import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('bundler', 'importer', 'docker'))\n"
             "print('LOADED', loaded)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout
    for verb in COMMANDS:
        assert f"  {verb} " in r.stdout


def test_each_summary_is_the_first_line_of_its_commands_docstring():
    for verb, (target, summary) in COMMANDS.items():
        module, func = target.split(":")
        command = getattr(importlib.import_module(module), func)
        assert command.help.strip().splitlines()[0] == summary, verb
        assert command.name == verb
