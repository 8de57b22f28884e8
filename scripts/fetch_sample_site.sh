#!/usr/bin/env bash
# Fetch the quickstart's real Chinese sample site: Debian's Chinese documentation packages, downloaded with
# `apt-get download` (no root needed) and unpacked with `dpkg-deb -x` into DEST (default data/sample-site).
# Writes DEST/packages.tsv: package, version, .deb file, sha256. Idempotent: a complete DEST is left alone.
set -euo pipefail
DEST=${1:-data/sample-site}
PKGS="debian-reference-zh-cn debian-reference-zh-tw debian-faq-zh-cn lilypond-doc-html-zh"
if [ -f "$DEST/packages.tsv" ] && [ -d "$DEST/root"/usr/share/doc ]; then
  exit 0
fi
mkdir -p "$DEST/debs" "$DEST/root"
cd "$DEST/debs"
if ! apt-get download $PKGS >/dev/null 2>&1; then
  # a fresh machine may have no package lists yet; root can fetch them
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
  apt-get download $PKGS >/dev/null 2>&1 || { echo "error: apt-get download $PKGS failed" >&2; exit 1; }
fi
cd - >/dev/null
: > "$DEST/packages.tsv.tmp"
for deb in "$DEST"/debs/*.deb; do
  dpkg-deb -x "$deb" "$DEST/root"
  printf '%s\t%s\t%s\t%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
    "$(basename "$deb")" "$(sha256sum "$deb" | cut -d' ' -f1)" >> "$DEST/packages.tsv.tmp"
done
sort -o "$DEST/packages.tsv.tmp" "$DEST/packages.tsv.tmp"
mv "$DEST/packages.tsv.tmp" "$DEST/packages.tsv"
