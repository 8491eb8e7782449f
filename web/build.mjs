// Builds the web map into api/static/: our page, script and style, and MapLibre GL JS (ES
// module, worker, stylesheet, source maps) from node_modules. No bundler: the page is a plain
// ES module that imports MapLibre by a relative URL. Run after `npm ci`; `make web` does both.
import {
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "api", "static");
const maplibre = join(here, "node_modules", "maplibre-gl");
const vendor = join(out, "vendor", "maplibre-gl");

rmSync(out, { recursive: true, force: true });
mkdirSync(vendor, { recursive: true });
for (const name of readdirSync(join(here, "src"))) {
  copyFileSync(join(here, "src", name), join(out, name));
}
const files = ["maplibre-gl.mjs", "maplibre-gl-worker.mjs", "maplibre-gl.css"];
for (const name of [...files, "maplibre-gl.mjs.map", "maplibre-gl-worker.mjs.map"]) {
  copyFileSync(join(maplibre, "dist", name), join(vendor, name));
}
copyFileSync(join(maplibre, "LICENSE.txt"), join(vendor, "LICENSE.txt"));
const { version } = JSON.parse(readFileSync(join(maplibre, "package.json"), "utf8"));
writeFileSync(join(out, ".built"), `maplibre-gl ${version}\n`);
console.log(`web map built into ${out} (maplibre-gl ${version})`);
