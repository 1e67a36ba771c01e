"""Protocol machines: one module or folder per protocol, sans-IO (see machine.py)."""
