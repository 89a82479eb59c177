#!/usr/bin/env bash
# Build the lungviewer program bundle with PyInstaller — one command:
#
#     packaging/build.sh
#
# * uses the project's virtual environment .venv (made, with the pinned CPU torch from
#   constraints.txt, if missing; PYTHON=... picks the interpreter that makes it);
# * installs PyInstaller (the `dev` extra's pin) into it when missing;
# * builds the one-folder bundle dist/lungviewer/ from packaging/lungviewer.spec;
# * packs dist/lungviewer-<version>-linux-x86_64.tar.gz (and a copy named
#   dist/lungviewer-linux-x86_64.tar.gz) with install.sh, a .desktop entry and the icon.
#
# Runs under `nice` (shared build machines). Prints the build time and the bundle size.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
case "$(uname -s)" in
    MINGW*|MSYS*|CYGWIN*) BIN=.venv/Scripts ;;  # Git Bash on Windows (untested)
    *) BIN=.venv/bin ;;
esac

if [ ! -e $BIN/python ] && [ ! -e $BIN/python.exe ]; then
    echo "build: creating .venv"
    "$PY" -m venv .venv
    $BIN/pip install -q -c constraints.txt -e .
fi
if ! $BIN/python -c "import lungviewer" 2>/dev/null; then
    $BIN/pip install -q --no-deps -e .
fi
if ! $BIN/python -c "import PyInstaller" 2>/dev/null; then
    echo "build: installing PyInstaller"
    spec=$($BIN/python - <<'PYEOF'
import tomllib
dev = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print(next((d for d in dev if d.lower().startswith("pyinstaller")), "pyinstaller>=6.5"))
PYEOF
)
    $BIN/pip install -q -c constraints.txt "$spec" 2>/dev/null || $BIN/pip install -q "$spec"
fi
if [ ! -f model_weights/manifest.json ]; then
    echo "build: model_weights/manifest.json is missing — the bundle needs the CAD weights" >&2
    exit 2
fi
[ -f resources/icon.png ] || $BIN/python packaging/make_icon.py

VERSION=$($BIN/python -c "import lungviewer; print(lungviewer.__version__)")
case "$(uname -s)" in
    Linux) OS=linux ;; Darwin) OS=macos ;; MINGW*|MSYS*|CYGWIN*) OS=windows ;; *) OS=$(uname -s) ;;
esac
ARCH=$(uname -m)

t0=$(date +%s)
nice -n 10 $BIN/pyinstaller --noconfirm --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/lungviewer.spec
t1=$(date +%s)
echo "build: PyInstaller took $((t1 - t0)) s"

if [ "$OS" = linux ] && command -v strip >/dev/null; then
    # drop the symbol tables / debug info these libraries ship with (about 130 MB; the
    # dynamic symbols stay). Only these files: stripping auditwheel-patched libraries
    # (numpy.libs, scipy.libs, ...) can break them, so PyInstaller's strip=True is off.
    before=$(du -sm dist/lungviewer | cut -f1)
    for f in dist/lungviewer/_internal/torch/lib/libtorch_cpu.so \
             dist/lungviewer/_internal/torch/lib/libtorch_python.so \
             dist/lungviewer/_internal/libpython3*.so* \
             dist/lungviewer/_internal/_libjpeg*.so dist/lungviewer/_internal/_openjpeg*.so; do
        [ -f "$f" ] && nice -n 10 strip --strip-unneeded "$f"
    done
    echo "build: stripped symbol tables, $before MB -> $(du -sm dist/lungviewer | cut -f1) MB"
fi

if [ "$OS" = linux ]; then
    # archive layout: lungviewer/ (the bundle) + share/ (desktop entry, icons) + install.sh
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    top="$stage/lungviewer-$VERSION"
    mkdir -p "$top/share/applications" "$top/share/icons/hicolor/256x256/apps" \
             "$top/share/icons/hicolor/scalable/apps"
    cp -a dist/lungviewer "$top/lungviewer"
    cp packaging/lungviewer.desktop "$top/share/applications/lungviewer.desktop"
    cp resources/icon.png "$top/share/icons/hicolor/256x256/apps/lungviewer.png"
    cp resources/icon.svg "$top/share/icons/hicolor/scalable/apps/lungviewer.svg"
    cp packaging/install.sh "$top/install.sh"
    chmod +x "$top/install.sh"
    tarball="dist/lungviewer-$VERSION-$OS-$ARCH.tar.gz"
    tar -C "$stage" -cf - "lungviewer-$VERSION" | nice -n 10 gzip -6 > "$tarball"
    cp "$tarball" "dist/lungviewer-$OS-$ARCH.tar.gz"
    t2=$(date +%s)
    echo "build: archive $(du -h "$tarball" | cut -f1) in $((t2 - t1)) s -> $tarball"
fi
if [ "$OS" = macos ] && [ -d dist/lungviewer.app ] && command -v hdiutil >/dev/null; then
    # untested here (built on Linux only): a disk image holding the .app
    hdiutil create -volname lungviewer -srcfolder dist/lungviewer.app -ov -format UDZO \
        "dist/lungviewer-$VERSION-macos-$ARCH.dmg"
fi
echo "build: bundle dist/lungviewer $(du -sh dist/lungviewer | cut -f1); total $(( $(date +%s) - t0 )) s"
