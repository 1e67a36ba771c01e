"""Payload analysis: URL extraction, shellcode emulation, downloading offers."""
