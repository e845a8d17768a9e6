"""The swap: replace the running application by the new version without losing a byte of its
data, and put the old version back by itself when the new one does not come up healthy.

kinds       which target kinds exist and what each provides (the pipeline's way in)
container   the `container` kind, built from:
  plan        what a swap will do (changes nothing) and the preflight checks
  run         run a plan, roll back to the previous generation, recover after a crash
  machine     the state machine whose states are the journal's steps
  journal     the durable record of a swap in progress (steps, typed records)
  generations the kept versions of an application
  config      the new container's settings (faithful copy, or first install)
  data        backup and exact restore of the container's mounts
  health      the health gate
  engine      the container operations over the Docker SDK
  status      what `bundle status` reports
"""
