"""core.registry: the one registry behind metrics and attacks (adding one = adding a file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lune.core.registry import Registry


def test_a_module_of_the_package_registers_itself_when_the_registry_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "plugins_tmp"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from lune.core.registry import Registry\nREG = Registry('plugin', __name__)\n"
    )
    (package / "shout.py").write_text(
        "from . import REG\n\n@REG.register('shout')\ndef shout(text):\n    return text.upper()\n"
    )
    (package / "whisper.py").write_text(
        "from . import REG\n\n@REG.register('whisper')\ndef f(text):\n    return text.lower()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import plugins_tmp

        assert plugins_tmp.REG._entries == {}  # nothing imported yet
        assert plugins_tmp.REG.names() == ("shout", "whisper")
        assert plugins_tmp.REG.get("shout")("a") == "A"
    finally:
        for name in [m for m in sys.modules if m.startswith("plugins_tmp")]:
            del sys.modules[name]


def test_a_name_taken_by_another_definition_is_an_error_naming_both() -> None:
    reg: Registry[object] = Registry("widget", "lune.core")

    def one() -> None: ...

    def two() -> None: ...

    reg.add("w", one)
    reg.add("w", one)  # the same definition again (a module imported twice) is fine
    with pytest.raises(ValueError, match=r"widget 'w' is defined twice: .*one and .*two"):
        reg.add("w", two)


def test_an_unknown_name_lists_the_known_ones() -> None:
    reg: Registry[int] = Registry("widget", "lune.core")
    reg.add("b", 2)
    reg.add("a", 1)
    assert reg.entries() == {"a": 1, "b": 2}
    with pytest.raises(KeyError, match="unknown widget 'c'; known: a, b"):
        reg.get("c")
