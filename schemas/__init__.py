"""JSON Schemas of the bundle spec and manifest (package data)."""
