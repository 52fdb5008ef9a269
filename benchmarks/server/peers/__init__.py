"""Peer servers for the server benchmarks: see launch.py (start/stop) and setup.sh (install)."""
