"""Exit codes (ExitCode, the one definition) and the errors a user can cause, each mapped to one.

0 done; 1 environment error (nothing changed); 2 usage; 3 bundle refused (nothing changed);
4 update failed and the previous version runs again; 5 rollback failed, operator needed;
9 a first install failed and was undone (nothing was there before, nothing is installed now).

`bundle status` is read-only, so besides 1 and 2 its codes are its own (AppState, 6-8), numbered
above the contract so that a monitoring script never mistakes one for a refusal or a rollback;
9 comes after them so that no code means two things. 10: `bundle check` found a newer release.
11: a staged service release did what it was asked and is paused after a stage, as its bundle says
(`pause`): nothing failed, but it is not finished; `bundle promote APP` continues it (`bundle abort
APP` rolls it back). Not 0, so that an unattended `bundle import -y` never takes a paused release
for a finished one.
130: interrupted (SIGINT, SIGTERM) before anything changed; an interrupt during a journaled step
ends like any other failure of that step (its undo runs to the end: 4, 5 or 9).
"""

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Every exit code of `bundle`. The numbers are a contract (scripts, monitoring, docs/cli.md):
    never renumber one. MEANINGS says what each means; bundlecli/registry.py which command can
    end with which."""

    DONE = 0
    ENVIRONMENT = 1
    USAGE = 2
    REFUSED = 3
    UPDATE_FAILED = 4
    OPERATOR_NEEDED = 5
    NOT_INSTALLED = 6       # status
    INACTIVE = 7            # status
    ENGINE_UNREACHABLE = 8  # status
    INSTALL_UNDONE = 9
    NEWER = 10              # check
    PAUSED = 11             # import, promote: a staged release paused after a stage (promote continues it)
    INTERRUPTED = 130       # SIGINT or SIGTERM before anything changed (128 + SIGINT, as shells say)

    @property
    def label(self) -> str:
        """The code as a word (the --json failure document's `error.kind`)."""
        return self.name.lower().replace("_", "-")


class AppState(IntEnum):
    """`bundle status` exit codes (like `systemctl is-active`): the worst state among the apps asked."""

    ACTIVE = ExitCode.DONE                            # runs its installed version, running and healthy
    NOT_INSTALLED = ExitCode.NOT_INSTALLED            # nothing is installed under that app name
    INACTIVE = ExitCode.INACTIVE                      # installed, but its container is missing, stopped,
                                                      # restarting, unhealthy or not running the installed image
    ENGINE_UNREACHABLE = ExitCode.ENGINE_UNREACHABLE  # the Docker engine does not answer: the state cannot be known

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class BundleError(Exception):
    """Base of every error printed as one line; `exit_code` is what the process returns."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT
    prefix = "error"
    partial: dict[str, Any] | None = None  # what was known when it failed: the --json failure document carries it

    def line(self) -> str:
        return f"{self.prefix}: {self}"


class EnvironmentProblem(BundleError):
    """The machine is not as needed (engine unreachable, disk full, lock held); nothing changed."""

    exit_code = ExitCode.ENVIRONMENT


class UsageProblem(BundleError):
    """The command line or the spec file is wrong."""

    exit_code = ExitCode.USAGE


class Refused(BundleError):
    """The bundle is not exactly what trusted people signed; nothing changed.

    Subclasses name the failed check (bundlecore.refusals)."""

    exit_code = ExitCode.REFUSED
    prefix = "refused"
    check = ""

    def line(self) -> str:
        return f"refused: {self.check}: {self}" if self.check else f"refused: {self}"


class UpdateFailed(BundleError):
    """The new version failed and the previous one was put back and is running."""

    exit_code = ExitCode.UPDATE_FAILED
    prefix = "update failed"


class OperatorNeeded(BundleError):
    """Rollback itself failed: nothing was deleted, the state dir says what is where."""

    exit_code = ExitCode.OPERATOR_NEEDED
    prefix = "operator needed"


class InstallUndone(BundleError):
    """A first install failed and was undone: no container, the volumes it created removed, data
    that was there before put back. Not exit 4: no previous version exists to be running again."""

    exit_code = ExitCode.INSTALL_UNDONE
    prefix = "install failed"


class NotActive(BundleError):
    """`start` or `restart` did what it was asked, but the app does not run its installed version
    healthy: the same verdict as `bundle status` (exit 7)."""

    exit_code = ExitCode.INACTIVE
    prefix = "inactive"


# What each exit code means, for docs/cli.md and the man page (bundlecli/registry.py EXIT_CODES says
# which command can end with which).
MEANINGS: dict[ExitCode, str] = {
    ExitCode.DONE: "done",
    ExitCode.ENVIRONMENT: "environment error (engine unreachable, disk full, lock held, no trust store); nothing changed",
    ExitCode.USAGE: "usage: a wrong command line or spec file",
    ExitCode.REFUSED: "bundle refused (the line and `error.check` name the failed check); nothing changed",
    ExitCode.UPDATE_FAILED: "update failed; the previous version was put back and is running",
    ExitCode.OPERATOR_NEEDED: "rollback failed; an operator is needed (nothing was deleted)",
    ExitCode.NOT_INSTALLED: "status: nothing is installed under that name (or nothing at all)",
    ExitCode.INACTIVE: "status, start, restart: installed, but not running its installed version healthy",
    ExitCode.ENGINE_UNREACHABLE: "status: the Docker engine does not answer; the state cannot be known",
    ExitCode.INSTALL_UNDONE: "a first install failed and was undone",
    ExitCode.NEWER: "check: upstream has a newer release",
    ExitCode.PAUSED: ("import, promote: a staged service release is paused after a stage, as its bundle asks; "
                      "`bundle promote APP` continues it, `bundle abort APP` rolls it back"),
    ExitCode.INTERRUPTED: "interrupted (SIGINT or SIGTERM) before anything changed; nothing changed",
}


def reason(e: BaseException) -> str:
    """An exception as the words of a one-line message: never a bare class name with an empty
    text after it (`KeyboardInterrupt: `)."""
    if isinstance(e, BundleError):
        return e.line()
    if isinstance(e, KeyboardInterrupt):
        return str(e) if type(e) is not KeyboardInterrupt else "interrupted"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
