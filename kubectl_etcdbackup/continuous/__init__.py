"""Continuous backup: a watch-fed delta stream of whole etcd revisions beside the full snapshots, and its
replay onto a full snapshot for a point-in-time restore. See segment.py for the stored format."""
