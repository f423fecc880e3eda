"""How the docs test reads a guide and compares what it prints (no processes started)."""

from __future__ import annotations

from guide_runner import commands, mismatch

GUIDE = """Intro.

```console
$ export W=/tmp/walk PORT=28443
$ cat > $W/policy.toml <<'EOF'
silo-id = "a"
EOF
$ flower-superlink \\
    --port $PORT > superlink.log 2>&1 &
$ fl-client check-data --data d.csv
rows        228
...
usable: yes
$ echo $?
0
```

<!-- not run -->
```console
$ flwr stop 1 fedsilo-local
```

```bash
not a console block
```
"""


def test_commands_join_continuations_and_here_documents() -> None:
    found = commands(GUIDE)
    assert [c.text.splitlines()[0] for c in found] == [
        "export W=/tmp/walk PORT=28443",
        "cat > $W/policy.toml <<'EOF'",
        "flower-superlink \\",
        "fl-client check-data --data d.csv",
        "echo $?",
    ]
    assert found[1].text.endswith("\nEOF") and found[1].expected == []
    assert found[2].text.endswith("superlink.log 2>&1 &")
    assert found[3].expected == ["rows        228", "...", "usable: yes"]


def test_blocks_marked_not_run_are_skipped() -> None:
    assert all("flwr stop" not in c.text for c in commands(GUIDE))


def test_numbers_and_ids_may_differ_but_words_may_not() -> None:
    shown = ["created key file k (mode 0600, key id 6dd0a2be244b4c52)"]
    assert mismatch(shown, "created key file k (mode 0600, key id 962c97f780b67261)\n") is None
    assert mismatch(shown, "created key file k (mode 0644)\n") is not None


def test_a_bare_status_is_exact() -> None:
    assert mismatch(["2"], "2\n") is None
    assert mismatch(["2"], "0\n") is not None


def test_lines_between_cuts_must_be_together_and_in_order() -> None:
    got = "a 1\nb 2\nnoise\nc 3\n"
    assert mismatch(["a 5", "b 6", "...", "c 7"], got) is None
    assert mismatch(["a 5", "c 7"], got) is not None
    assert mismatch(["c 7", "...", "a 5"], got) is not None
