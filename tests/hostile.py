"""Hostile LIDC XML documents for the parser and window tests."""

from __future__ import annotations

from pathlib import Path


def _laughs(levels: int = 9) -> str:
    ents = ['<!ENTITY l0 "lol">'] + [
        f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, levels + 1)]
    return ("<?xml version=\"1.0\"?>\n<!DOCTYPE LidcReadMessage [\n" + "\n".join(ents)
            + f"\n]>\n<LidcReadMessage><ResponseHeader><SeriesInstanceUid>&l{levels};"
            "</SeriesInstanceUid></ResponseHeader></LidcReadMessage>\n")


SECRET = "TOP-SECRET-7f3a91"


def _hostile_docs(tmp_path: Path) -> dict[str, str]:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    uri = secret.as_uri()
    return {
        "billion-laughs": _laughs(),
        "quadratic-blowup": ('<?xml version="1.0"?><!DOCTYPE LidcReadMessage [<!ENTITY a "'
                             + "x" * 5000 + '">]><LidcReadMessage>' + "&a;" * 5000
                             + "</LidcReadMessage>"),
        "external-entity": (f'<?xml version="1.0"?><!DOCTYPE LidcReadMessage [<!ENTITY s SYSTEM '
                            f'"{uri}">]><LidcReadMessage><ResponseHeader><SeriesInstanceUid>&s;'
                            "</SeriesInstanceUid></ResponseHeader></LidcReadMessage>"),
        "parameter-entity": (f'<?xml version="1.0"?><!DOCTYPE LidcReadMessage [<!ENTITY % p SYSTEM '
                             f'"{uri}"> %p;]><LidcReadMessage/>'),
        "external-dtd": (f'<?xml version="1.0"?><!DOCTYPE LidcReadMessage SYSTEM "{uri}">'
                         "<LidcReadMessage><ResponseHeader><SeriesInstanceUid>1.2"
                         "</SeriesInstanceUid></ResponseHeader></LidcReadMessage>"),
        "garbage": "\x00\xff<LidcReadMessage><<<",
    }
