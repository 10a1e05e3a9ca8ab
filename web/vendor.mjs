// Copies the pinned graph library from node_modules into the Python package, where the
// report inlines it into every circuit page. Run after `npm ci`; the package and CI then
// need no npm. Writes the minified file, its licence and a manifest with its sha256.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "sparsecircuits", "report", "static", "vendor");
const libs = [{ name: "cytoscape", file: "dist/cytoscape.min.js", license: "LICENSE" }];

mkdirSync(out, { recursive: true });
const manifest = {};
for (const lib of libs) {
  const root = join(here, "node_modules", lib.name);
  const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
  const code = readFileSync(join(root, lib.file), "utf8");
  if (/<\/script|<!--/i.test(code)) {
    throw new Error(`${lib.name}: the code cannot be inlined in a <script> element as it is`);
  }
  const target = `${lib.name}.min.js`;
  writeFileSync(join(out, target), code);
  copyFileSync(join(root, lib.license), join(out, `${lib.name}.LICENSE.txt`));
  manifest[lib.name] = { version, file: target, license: `${lib.name}.LICENSE.txt`,
    sha256: createHash("sha256").update(code, "utf8").digest("hex") };
  console.log(`${lib.name} ${version} -> ${join(out, target)}`);
}
writeFileSync(join(out, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
