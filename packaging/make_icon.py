"""Draw lungviewer's icon: two lungs and a trachea on a dark rounded square.

Writes ``resources/icon.svg`` (the source) and ``resources/icon.png`` (256×256, drawn with
Pillow from the same shapes; PyInstaller turns the PNG into .ico / .icns on Windows and
macOS). Run ``python packaging/make_icon.py`` after changing the shapes.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
SIZE = 256
BG = "#1d2733"
LUNG = "#e8836f"
LUNG_DARK = "#b8544a"
AIRWAY = "#f3efe6"

# shapes on a 256 grid: a rounded square, a trachea splitting into two bronchi, two lungs
# (polygons, the left lung with the cardiac notch), a highlighted nodule
RIGHT_LUNG = [(118, 70), (96, 62), (70, 78), (52, 112), (42, 160), (44, 200), (60, 214),
              (92, 208), (118, 196), (122, 150)]
LEFT_LUNG = [(138, 70), (160, 62), (186, 78), (204, 112), (214, 160), (212, 200), (196, 214),
             (168, 208), (150, 200), (146, 176), (136, 160), (134, 120)]
TRACHEA = [(128, 28), (128, 104)]
BRONCHI = [[(128, 104), (104, 128)], [(128, 104), (152, 128)]]
NODULE = (176, 150, 10)  # x, y, radius


def svg() -> str:
    def pts(poly):
        return " ".join(f"{x},{y}" for x, y in poly)

    x, y, r = NODULE
    lines = "".join(
        f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="{AIRWAY}" '
        f'stroke-width="{w}" stroke-linecap="round"/>'
        for (a, b), w in [(TRACHEA, 16), (BRONCHI[0], 10), (BRONCHI[1], 10)])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SIZE} {SIZE}" '
        f'width="{SIZE}" height="{SIZE}">'
        f'<rect x="8" y="8" width="240" height="240" rx="44" fill="{BG}"/>'
        f'<polygon points="{pts(RIGHT_LUNG)}" fill="{LUNG}" stroke="{LUNG_DARK}" '
        f'stroke-width="4" stroke-linejoin="round"/>'
        f'<polygon points="{pts(LEFT_LUNG)}" fill="{LUNG}" stroke="{LUNG_DARK}" '
        f'stroke-width="4" stroke-linejoin="round"/>'
        f'{lines}'
        f'<circle cx="{x}" cy="{y}" r="{r}" fill="#ffd84a" stroke="#7a5a00" stroke-width="3"/>'
        f'</svg>\n')


def png(scale: int = 4) -> Image.Image:
    """Drawn at ``scale``× and reduced, for smooth edges."""
    s = scale
    img = Image.new("RGBA", (SIZE * s, SIZE * s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((8 * s, 8 * s, 248 * s, 248 * s), radius=44 * s, fill=BG)
    for poly in (RIGHT_LUNG, LEFT_LUNG):
        d.polygon([(x * s, y * s) for x, y in poly], fill=LUNG, outline=LUNG_DARK, width=4 * s)
    for (a, b), w in [(TRACHEA, 16), (BRONCHI[0], 10), (BRONCHI[1], 10)]:
        d.line([(a[0] * s, a[1] * s), (b[0] * s, b[1] * s)], fill=AIRWAY, width=w * s)
        for x, y in (a, b):
            d.ellipse(((x - w / 2) * s, (y - w / 2) * s, (x + w / 2) * s, (y + w / 2) * s),
                      fill=AIRWAY)
    x, y, r = NODULE
    d.ellipse(((x - r) * s, (y - r) * s, (x + r) * s, (y + r) * s), fill="#ffd84a",
              outline="#7a5a00", width=3 * s)
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def main() -> None:
    out = ROOT / "resources"
    out.mkdir(exist_ok=True)
    (out / "icon.svg").write_text(svg(), encoding="utf-8")
    png().save(out / "icon.png", optimize=True)
    print(f"wrote {out / 'icon.svg'} and {out / 'icon.png'}")


if __name__ == "__main__":
    main()
