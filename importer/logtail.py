"""The last log lines of a failed container, kept in the app's dir for `bundle history` and
`bundle logs` (every kind: the container a swap removes, the task Swarm rolled back)."""

from __future__ import annotations

from pathlib import Path

from bundlecore.engine import EngineError
from bundlecore.fsutil import atomic_write_bytes

LOG_TAIL_LINES, LOG_TAIL_BYTES = 200, 64 * 1024


def save_tail(client, app_dir: Path, container_id: str, stem: str, out=print, *, skip_empty: bool = False) -> str | None:
    """Write the container's last LOG_TAIL_LINES (at most LOG_TAIL_BYTES) to app_dir/logs/STEM.log;
    the path relative to app_dir, or None (said, never raised: it must not block an undo).
    `skip_empty`: a container that printed nothing gets no file (None), so a caller can try another."""
    rel = f"logs/{stem}.log"
    try:
        raw = client.logs(container_id, stdout=True, stderr=True, tail=LOG_TAIL_LINES)[-LOG_TAIL_BYTES:]
        if skip_empty and not raw.strip():
            return None
        (app_dir / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_bytes(app_dir / rel, raw)
    except (OSError, EngineError) as e:
        out(f"  could not save the logs of {container_id[:12]}: {e}")
        return None
    return rel
