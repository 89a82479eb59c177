#!/usr/bin/env bash
# Run the frozen program's self-test the way a user's machine would:
#
#     packaging/smoke_test.sh [dist/lungviewer-linux-x86_64.tar.gz | dist/lungviewer]
#
# * an archive is unpacked into a temporary folder and installed there with its install.sh
#   (desktop entry and icon checked); the installed command is run (default: the archive if
#   it exists, else the dist/lungviewer folder);
# * `env -i` with a minimal PATH whose `python`/`python3` are decoys that fail, an empty
#   HOME, cache and config folder: nothing from the build environment can be used;
# * the report goes to stdout and dist/selftest-frozen.json; the exit code is the
#   self-test's (0 = every step passed).
set -uo pipefail
cd "$(dirname "$0")/.."
target=${1:-}
if [ -z "$target" ]; then
    if [ -f dist/lungviewer-linux-x86_64.tar.gz ]; then
        target=dist/lungviewer-linux-x86_64.tar.gz
    else
        target=dist/lungviewer
    fi
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/lungviewer-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
case "$target" in
    *.tar.gz)
        # unpack, install with the archive's install.sh into a temporary prefix, and run the
        # installed command (a symlink in PREFIX/bin, as a user would)
        tar -C "$work" -xzf "$target" || { echo "smoke: cannot unpack $target"; exit 2; }
        unpacked=$(ls -d "$work"/lungviewer-*/ 2>/dev/null | head -1)
        prefix="$work/prefix"
        if ! env -i PATH=/usr/bin:/bin HOME="$work" PREFIX="$prefix" sh "$unpacked/install.sh"; then
            echo "smoke: install.sh failed"; exit 2
        fi
        desktop="$prefix/share/applications/lungviewer.desktop"
        if ! grep -q "^Exec=$prefix/opt/lungviewer/lungviewer %f" "$desktop" 2>/dev/null \
                || [ ! -f "$prefix/share/icons/hicolor/256x256/apps/lungviewer.png" ]; then
            echo "smoke: the desktop entry or the icon was not installed properly"; exit 2
        fi
        exe="$prefix/bin/lungviewer" ;;
    *)
        exe="$target/lungviewer" ;;
esac
if [ ! -x "$exe" ]; then
    echo "smoke: no frozen program at $exe (build it with packaging/build.sh)"
    exit 2
fi
mkdir -p "$work/decoy" "$work/home" "$work/tmp"
for p in python python3 python3.11; do
    printf '#!/bin/sh\necho "smoke: the bundle called %s" >&2\nexit 97\n' "$p" > "$work/decoy/$p"
    chmod +x "$work/decoy/$p"
done
echo "smoke: $exe self-test --json (env -i, empty cache)"
start=$(date +%s.%N)
env -i PATH="$work/decoy:/usr/bin:/bin" HOME="$work/home" TMPDIR="$work/tmp" LANG=C.UTF-8 \
    LUNGVIEWER_CACHE_DIR="$work/cache" LUNGVIEWER_CONFIG_DIR="$work/config" \
    timeout 360 "$exe" self-test --json > "$work/report.json" 2> "$work/stderr.log"
rc=$?
end=$(date +%s.%N)
mkdir -p dist
cp "$work/report.json" dist/selftest-frozen.json 2>/dev/null || true
cat "$work/report.json"
if [ $rc -ne 0 ]; then
    echo "--- stderr (last 40 lines) ---"
    tail -40 "$work/stderr.log"
fi
if ! grep -q '"frozen": true' "$work/report.json"; then
    echo "smoke: the report does not come from the frozen program"
    [ $rc -eq 0 ] && rc=3
fi
printf 'smoke: exit %d after %.1f s (wall, process start to exit)\n' "$rc" \
    "$(awk "BEGIN{print $end - $start}")"
exit $rc
