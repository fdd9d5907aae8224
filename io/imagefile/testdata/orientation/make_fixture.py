"""Makes the EXIF orientation fixture: a 32x16 image of four coloured
8-aligned blocks (JPEG without chroma subsampling, so that two decoders
agree to a few levels) stored with EXIF orientation 3, 6 and 8 (a camera's half turn, a
phone held upright, and the other way), and each one as PIL's
ImageOps.exif_transpose displays it. Run with Debian's python3-pil:
/usr/bin/python3 make_fixture.py"""
from PIL import Image, ImageOps

img = Image.new("RGB", (32, 16))
colours = [(230, 20, 20), (20, 200, 40), (30, 50, 240), (245, 230, 20)]
for y in range(16):
    for x in range(32):
        img.putpixel((x, y), colours[(y // 8) * 2 + x // 16])
for o in (3, 6, 8):
    exif = Image.Exif()
    exif[0x0112] = o
    img.save(f"orient{o}.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(f"orient{o}.jpg"))
    shown.save(f"orient{o}.png")
    print(o, Image.open(f"orient{o}.jpg").size, "->", shown.size)
