#!/usr/bin/env bash
# Installs the system packages gridcover needs, when they are missing:
#   - PostGIS for the machine's PostgreSQL server (Debian: postgresql-<major>-postgis-3)
#   - GDAL command-line tools (gdal-bin), used by the GIS-client tests
#   - npm (builds the web map), Chromium and ChromeDriver (the browser tests)
# On Debian as root it installs them with apt-get; elsewhere it says what to install.
set -euo pipefail

pg_bindir=""
for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    if [ -x "$dir/initdb" ]; then pg_bindir=$dir; break; fi
done
if [ -z "$pg_bindir" ] && [ -n "${GRIDCOVER_PG_BINDIR:-}" ]; then pg_bindir=$GRIDCOVER_PG_BINDIR; fi

missing=()
if [ -z "$pg_bindir" ]; then
    if [ -z "${GRIDCOVER_DATABASE_URL:-}" ]; then missing+=("postgresql-15"); fi
else
    major=$("$pg_bindir/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
    sharedir=$("$pg_bindir/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/$major")
    [ -f "$sharedir/extension/postgis.control" ] || missing+=("postgresql-$major-postgis-3")
fi
command -v ogrinfo >/dev/null 2>&1 || missing+=("gdal-bin")
# The web map is built with npm (MapLibre GL JS) and tested in headless Chromium.
command -v npm >/dev/null 2>&1 || missing+=("npm")
command -v chromium >/dev/null 2>&1 || missing+=("chromium")
command -v chromedriver >/dev/null 2>&1 || missing+=("chromium-driver")
# A Chinese font, so the browser draws the page's place names (and its screenshots show them).
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || [ -n "$(fc-list :lang=zh 2>/dev/null)" ] \
    || missing+=("fonts-wqy-microhei")

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the package lists when the packages cannot be found in them.
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/gridcover-apt.log 2>&1; then
        apt-get update -q >>/tmp/gridcover-apt.log 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/gridcover-apt.log 2>&1 || {
            echo "apt-get could not install ${missing[*]}; see /tmp/gridcover-apt.log" >&2
            exit 1
        }
    fi
    exit 0
fi

echo "gridcover needs these system packages: ${missing[*]}" >&2
echo "install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), or set" >&2
echo "GRIDCOVER_DATABASE_URL to an existing PostGIS database, then run make again" >&2
exit 1
