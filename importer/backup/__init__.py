"""Backup and exact restore of writable mounts (named volumes and bind mounts), for every target
kind: the container swap backs up the container it replaces, the service kind the local volumes of
a service (importer.kinds.service.volumes). `data` is the one backup/restore.
"""
