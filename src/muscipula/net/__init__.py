"""Drivers: the only code that touches sockets."""
