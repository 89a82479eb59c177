"""Keyboard shortcuts: the F1 table and the Preferences dialog that changes them.

Every command of the menus is an action with a default key. The reader may give any of
them another key (or none) in Edit → Preferences; a key that two commands would share, or
that the views keep for themselves (arrows, Page Up/Down, Home, End, Esc), is refused
with the names of both. The changes are saved in the settings (``shortcuts/<command>``,
only those that differ from the default) and applied at every start. The F1 table is made
from the same actions, so it always shows the keys in use.
"""

from __future__ import annotations

import html
import re

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView, QLabel,
                               QKeySequenceEdit, QMenuBar, QMessageBox, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from . import settings

#: keys the views handle themselves (main window ``keyPressEvent``), never assignable
RESERVED = {"Up": "next image", "Down": "previous image", "Left": "previous image",
            "Right": "next image", "PgUp": "10 images on", "PgDown": "10 images back",
            "Home": "first image", "End": "last image", "Esc": "end the tool"}
#: what the mouse and those keys do, for the F1 table
FIXED = [
    ("Wheel, ↑ ↓ ← →", "next / previous image"),
    ("PageUp / PageDown", "10 images on / back"),
    ("Home / End", "first / last image"),
    ("Ctrl+wheel", "zoom"),
    ("Left drag", "pan (or draw, with a tool or the box tool)"),
    ("Left click", "move the crosshair (the other views follow)"),
    ("Right drag", "window / level (→ wider, ↓ higher level)"),
    ("Esc", "end the measurement or box tool"),
]


def command_name(action: QAction) -> str:
    """The action's text without its accelerator, ellipsis and changing figures in
    parentheses (``Thick &slab (MIP, 10 mm)`` → ``Thick slab``)."""
    text = action.text().replace("&&", "\0").replace("&", "").replace("\0", "&")
    text = re.sub(r"\s*\([^)]*\d[^)]*\)\s*$", "", text).replace("…", "").strip()
    return text


def menu_actions(menubar: QMenuBar) -> list[QAction]:
    """Every command in the menus, in menu order (submenus walked, separators left out)."""
    out: list[QAction] = []

    def walk(menu) -> None:
        for a in menu.actions():
            if a.menu() is not None:
                walk(a.menu())
            elif not a.isSeparator() and a not in out:
                out.append(a)

    for top in menubar.actions():
        if top.menu() is not None:
            walk(top.menu())
    return [a for a in out if command_name(a)]


def _key(seq: QKeySequence | str) -> str:
    return (seq if isinstance(seq, QKeySequence) else QKeySequence(seq)).toString(
        QKeySequence.SequenceFormat.PortableText)


class Shortcuts:
    """The window's commands, their default keys and the reader's own (see the module
    docstring)."""

    def __init__(self, actions: list[QAction]) -> None:
        self.actions: dict[str, QAction] = {}
        self.defaults: dict[str, str] = {}
        for a in actions:
            name = a.property("command") or command_name(a)
            if name in self.actions:
                continue
            a.setProperty("command", name)
            self.actions[name] = a
            self.defaults[name] = _key(a.shortcut())

    def current(self) -> dict[str, str]:
        return {name: _key(a.shortcut()) for name, a in self.actions.items()}

    def conflicts(self, keys: dict[str, str]) -> list[str]:
        """Why ``keys`` (command → key) cannot be used: one line per key that two commands
        share or that the views keep."""
        problems = []
        seen: dict[str, str] = {}
        for name, key in keys.items():
            key = _key(key)
            if not key:
                continue
            if key in RESERVED:
                problems.append(f"{key} is kept by the views ({RESERVED[key]}); "
                                f"choose another key for “{name}”.")
            elif key in seen:
                problems.append(f"{key} is given to both “{seen[key]}” and “{name}”.")
            else:
                seen[key] = name
        return problems

    def apply(self, keys: dict[str, str], save: bool = True) -> list[str]:
        """Give the commands the keys in ``keys`` (others keep theirs); refused — nothing
        changes — with the reasons returned when there is a conflict."""
        wanted = self.current()
        wanted.update({k: _key(v) for k, v in keys.items() if k in self.actions})
        problems = self.conflicts(wanted)
        if problems:
            return problems
        for name, key in wanted.items():
            self.actions[name].setShortcut(QKeySequence(key))
            if save:
                if key == self.defaults[name]:
                    settings.remove(f"shortcuts/{name}")
                else:
                    settings.put(f"shortcuts/{name}", key or "none")
        return []

    def load(self) -> list[str]:
        """Apply the keys saved in the settings (a saved set with a conflict — e.g. a new
        default took the key — is ignored for the commands concerned)."""
        saved = {}
        for name in self.actions:
            v = settings.get(f"shortcuts/{name}")
            if v is not None:
                saved[name] = "" if str(v) == "none" else str(v)
        if not saved:
            return []
        problems = self.apply(saved, save=False)
        if problems:  # keep what does not conflict, one by one
            for name, key in saved.items():
                self.apply({name: key}, save=False)
        return problems

    def reset(self) -> None:
        self.apply(dict(self.defaults))

    # -- the F1 table ---------------------------------------------------------------------
    def help_rows(self) -> list[tuple[str, str]]:
        rows = [(a.shortcut().toString(QKeySequence.SequenceFormat.NativeText), name)
                for name, a in self.actions.items() if not a.shortcut().isEmpty()]
        return rows + FIXED

    def help_html(self) -> str:
        cells = "".join(
            f"<tr><td style='padding-right:18px'><b>{html.escape(k)}</b></td>"
            f"<td>{html.escape(t)}</td></tr>" for k, t in self.help_rows())
        return (f"<table cellspacing='0' cellpadding='2'>{cells}</table>"
                "<p>Change the keys in Edit → Preferences.</p>")


class ShortcutDialog(QDialog):
    """Edit → Preferences: one row per command with its key (click, then press the new
    key; Delete clears it)."""

    def __init__(self, shortcuts: Shortcuts, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Preferences — keyboard shortcuts")
        self.shortcuts = shortcuts
        self.table = QTableWidget(len(shortcuts.actions), 2)
        self.table.setHorizontalHeaderLabels(["Command", "Key"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(1, 190)  # "Ctrl+Shift+Z" and its clear button
        self.editors: dict[str, QKeySequenceEdit] = {}
        for i, (name, a) in enumerate(shortcuts.actions.items()):
            item = QTableWidgetItem(name)
            item.setToolTip(f"default: {shortcuts.defaults[name] or 'none'}")
            self.table.setItem(i, 0, item)
            ed = QKeySequenceEdit(a.shortcut())
            ed.setMaximumSequenceLength(1)
            ed.setClearButtonEnabled(True)
            self.table.setCellWidget(i, 1, ed)
            self.editors[name] = ed
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #c03000;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        defaults = QPushButton("Defaults")
        defaults.clicked.connect(self.restore_defaults)
        row = QHBoxLayout()
        row.addWidget(defaults)
        row.addStretch(1)
        row.addWidget(buttons)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Click a key, press the new one. A key can belong to one "
                             "command only."))
        lay.addWidget(self.table, 1)
        lay.addWidget(self.message)
        lay.addLayout(row)
        self.resize(560, 640)

    def keys(self) -> dict[str, str]:
        return {name: _key(ed.keySequence()) for name, ed in self.editors.items()}

    def restore_defaults(self) -> None:
        for name, ed in self.editors.items():
            ed.setKeySequence(QKeySequence(self.shortcuts.defaults[name]))

    def accept(self) -> None:
        problems = self.shortcuts.apply(self.keys())
        if problems:  # refused: the dialog stays open with the reason
            self.message.setText("\n".join(problems))
            if not getattr(self.parent(), "quiet_errors", False):
                QMessageBox.warning(self, "Key already in use", "\n".join(problems))
            return
        super().accept()
