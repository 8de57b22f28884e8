#!/usr/bin/env bash
# Fetch the quickstart's real Chinese sample site: Chinese documentation packages from Debian, downloaded with
# `apt-get download` (no root needed) and unpacked with dpkg-deb into DEST (default data/sample-site): the Debian
# Reference (zh-CN, zh-TW), the Debian FAQ (zh-CN), LilyPond's Chinese pages, and from LibreOffice's Simplified
# Chinese help its how-to guides and menu-command pages (text/*/guide/ and text/*/01/: ~1 420 of its ~2 560
# pages; the rest, dialogs, toolbars, shortcuts and Basic reference, would double what every test extracts).
# Writes DEST/packages.tsv: package, version, .deb file, sha256. Idempotent: a DEST that lists every package is
# left alone; one fetched before a package was added here is fetched again.
set -euo pipefail
DEST=${1:-data/sample-site}
PKGS="debian-reference-zh-cn debian-reference-zh-tw debian-faq-zh-cn lilypond-doc-html-zh libreoffice-help-zh-cn"

complete() {
  [ -f "$DEST/packages.tsv" ] && [ -d "$DEST/root"/usr/share/doc ] || return 1
  for p in $PKGS; do cut -f1 "$DEST/packages.tsv" | grep -qx "$p" || return 1; done
}

unpack() {  # a .deb into DEST/root; from LibreOffice's help only the guides and menu-command pages
  case "$(dpkg-deb -f "$1" Package)" in
    libreoffice-help-*)
      dpkg-deb --fsys-tarfile "$1" | tar -x -C "$DEST/root" --wildcards \
        './usr/share/libreoffice/help/*/text/*/guide/*' './usr/share/libreoffice/help/*/text/*/01/*' ;;
    *) dpkg-deb -x "$1" "$DEST/root" ;;
  esac
}

if complete; then
  exit 0
fi
mkdir -p "$DEST/debs" "$DEST/root"
rm -f "$DEST"/debs/*.deb  # an earlier, partial fetch may hold other versions
cd "$DEST/debs"
if ! apt-get download $PKGS >/dev/null 2>&1; then
  # a fresh machine may have no package lists yet; root can fetch them
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
  apt-get download $PKGS >/dev/null 2>&1 || { echo "error: apt-get download $PKGS failed" >&2; exit 1; }
fi
cd - >/dev/null
: > "$DEST/packages.tsv.tmp"
for deb in "$DEST"/debs/*.deb; do
  unpack "$deb"
  printf '%s\t%s\t%s\t%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
    "$(basename "$deb")" "$(sha256sum "$deb" | cut -d' ' -f1)" >> "$DEST/packages.tsv.tmp"
done
sort -o "$DEST/packages.tsv.tmp" "$DEST/packages.tsv.tmp"
mv "$DEST/packages.tsv.tmp" "$DEST/packages.tsv"
