"""The verbs of `bundle`: which module holds each command, its one-line summary, and the exit
codes it can end with. Above both sides: it names modules of bundler/ and importer/, which
never import it (the core and the two sides name nothing above them)."""

from __future__ import annotations

from bundlecore.errors import ExitCode as E  # short: the table below reads as a table

# verb -> ("module:function", one-line summary). A verb's module is imported only when that verb
# runs, so `bundle --help` loads none of them and the intranet side never loads the internet-side
# modules (and their dependencies) it does not use. The summary is shown by `bundle --help`; a
# unit test keeps it equal to the first line of the command's own docstring.
COMMANDS = {
    "build": ("bundler.cmd_build:build", "Pack pinned images, a manifest, SHA256SUMS and a signature into one zstd file."),
    "approve": ("bundler.cmd_approve:approve",
                "Verify a bundle, then add your signature to it (rewrites its first frame only)."),
    "check": ("bundler.cmd_check:check",
              "Ask upstream's GitHub Releases for a newer version (exit 10), optionally build and announce it."),
    "inspect": ("importer.cmd_inspect:inspect_cmd",
                "Show a bundle's manifest summary from its first frame only. NOTHING here is verified."),
    "verify": ("importer.cmd_verify:verify",
               "Check a bundle completely (exit 0 trusted, 3 refused) without changing anything."),
    "import": ("importer.cmd_import:import_cmd", "Verify a bundle, load its images and swap the running application."),
    "join": ("bundlecore.cmd_join:join",
             "Write a split bundle (OUT.part001 or the prefix OUT) as one file, each part checked on the way."),
    "inventory": ("importer.cmd_inventory:inventory",
                  "Print the images and layer diff IDs this engine holds (--json: the file for `bundle build --have`)."),
    "status": ("importer.cmd_status:status",
               "Show the installed version, previous generations and the last import result."),
    "rollback": ("importer.cmd_rollback:rollback",
                 "Put the previous generation of NAME back, with the data it had when it was replaced."),
    "promote": ("importer.cmd_release:promote",
                "Continue APP's paused staged release with its next stage (each stage's analysis still applies)."),
    "abort": ("importer.cmd_release:abort",
              "Roll APP's staged release back everywhere it went, stage by stage in reverse order, with data."),
    "recover": ("importer.cmd_recover:recover",
                "Bring every application with an interrupted swap back to a healthy version."),
    "list": ("importer.cmd_list:list_cmd", "List the installed applications with their version, container and health."),
    "history": ("importer.cmd_history:history",
                "Show every install, upgrade, rollback and uninstall of NAME with its bundle, signers and result."),
    "uninstall": ("importer.cmd_uninstall:uninstall",
                  "Stop and remove NAME's container, after a final backup of its data; clear its state."),
    "logs": ("importer.cmd_logs:logs", "Print the output of NAME's container, or the saved log of its last failed release."),
    "start": ("importer.cmd_control:start",
              "Start NAME's installed container (after `bundle stop`) and wait until it is healthy."),
    "stop": ("importer.cmd_control:stop", "Stop NAME's container; `bundle status` then says it was stopped by an admin."),
    "restart": ("importer.cmd_control:restart", "Restart NAME's installed container and wait until it is healthy."),
    "show": ("importer.cmd_show:show",
             "Show the run settings NAME runs with and where each came from: bundle, site file or this host."),
    "restore": ("importer.cmd_restore:restore",
                "Put back the data of an uninstalled app from the final backup its uninstall kept."),
    "doctor": ("importer.cmd_doctor:doctor", "Check this host before a first import (exit 1 when something would stop it)."),
    "version": ("bundlecli.main:version_cmd", "Print the version of bundle."),
    "help": ("bundlecli.main:help_cmd", "Show the help of bundle, or of one command."),
}

# verb -> the exit codes it can end with (bundlecore.errors has their meanings): docs/cli.md and
# each command's JSON Schema are generated and checked from this table.
EXIT_CODES = {
    "build": (E.DONE, E.ENVIRONMENT, E.USAGE),
    "approve": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED),
    "check": (E.DONE, E.ENVIRONMENT, E.USAGE, E.NEWER),
    "inspect": (E.DONE, E.ENVIRONMENT, E.USAGE),
    "verify": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED),
    "import": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED, E.UPDATE_FAILED, E.OPERATOR_NEEDED, E.INSTALL_UNDONE,
               E.PAUSED),
    "join": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED),
    "inventory": (E.DONE, E.ENVIRONMENT, E.USAGE),
    "status": (E.DONE, E.ENVIRONMENT, E.USAGE, E.NOT_INSTALLED, E.INACTIVE, E.ENGINE_UNREACHABLE),
    "rollback": (E.DONE, E.ENVIRONMENT, E.USAGE, E.UPDATE_FAILED, E.OPERATOR_NEEDED),
    "promote": (E.DONE, E.ENVIRONMENT, E.USAGE, E.UPDATE_FAILED, E.OPERATOR_NEEDED, E.PAUSED),
    "abort": (E.DONE, E.ENVIRONMENT, E.USAGE, E.OPERATOR_NEEDED),
    "recover": (E.DONE, E.ENVIRONMENT, E.USAGE, E.OPERATOR_NEEDED),
    "list": (E.DONE, E.ENVIRONMENT, E.USAGE),
    "history": (E.DONE, E.ENVIRONMENT, E.USAGE),
    "uninstall": (E.DONE, E.ENVIRONMENT, E.USAGE, E.OPERATOR_NEEDED),
    "logs": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED),
    "start": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED, E.INACTIVE),
    "stop": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED),
    "restart": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED, E.INACTIVE),
    "show": (E.DONE, E.ENVIRONMENT, E.USAGE, E.REFUSED),
    "restore": (E.DONE, E.ENVIRONMENT, E.USAGE, E.OPERATOR_NEEDED),
    "doctor": (E.DONE, E.ENVIRONMENT, E.USAGE),
    "version": (E.DONE, E.USAGE),
    "help": (E.DONE, E.USAGE),
}
# Every command can be interrupted before it changed anything (a journaled step's interrupt ends
# as that step's failure: its undo runs, then 4, 5 or 9).
EXIT_CODES = {verb: (*codes, E.INTERRUPTED) for verb, codes in EXIT_CODES.items()}
# `help` prints help text for people; a program reads docs/cli.md and schemas/cli/ instead.
NO_JSON = {"help"}
