"""An audit event's run names one command run: a forked child (a fork server's command) is another
run, or `bundle history` would take two commands' events for one operation."""

import os

from importer import audit


def test_a_forked_child_is_a_run_of_its_own():
    parent = audit.AuditEvent(audit.EventKind.IMPORT, audit.Result.REFUSED, 3).run
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, audit.AuditEvent(audit.EventKind.IMPORT, audit.Result.REFUSED, 3).run.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child = f.read()
    os.waitpid(pid, 0)
    assert parent == audit.RUN_ID and len(child) == 32 and child != parent
