#!/usr/bin/env sh
# Install lungviewer for the current user (no root): run from the unpacked archive.
#   ./install.sh            install into ~/.local (program in ~/.local/opt/lungviewer)
#   ./install.sh --remove   uninstall
# PREFIX=/usr/local ./install.sh installs system-wide (run as root).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-$HOME/.local}
opt="$PREFIX/opt/lungviewer"
apps="$PREFIX/share/applications"
icons="$PREFIX/share/icons/hicolor"
if [ "${1:-}" = "--remove" ]; then
    rm -rf "$opt" "$PREFIX/bin/lungviewer" "$apps/lungviewer.desktop" \
           "$icons/256x256/apps/lungviewer.png" "$icons/scalable/apps/lungviewer.svg"
    echo "lungviewer removed from $PREFIX"
    exit 0
fi
mkdir -p "$PREFIX/opt" "$PREFIX/bin" "$apps" "$icons/256x256/apps" "$icons/scalable/apps"
rm -rf "$opt"
cp -a "$here/lungviewer" "$opt"
ln -sf "$opt/lungviewer" "$PREFIX/bin/lungviewer"
sed "s|^Exec=.*|Exec=$opt/lungviewer %f|; s|^TryExec=.*|TryExec=$opt/lungviewer|" \
    "$here/share/applications/lungviewer.desktop" > "$apps/lungviewer.desktop"
cp "$here/share/icons/hicolor/256x256/apps/lungviewer.png" "$icons/256x256/apps/"
cp "$here/share/icons/hicolor/scalable/apps/lungviewer.svg" "$icons/scalable/apps/"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" 2>/dev/null || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q "$icons" 2>/dev/null || true
echo "lungviewer installed in $opt (command: $PREFIX/bin/lungviewer; menu entry added)."
echo "Check it with: $PREFIX/bin/lungviewer self-test"
