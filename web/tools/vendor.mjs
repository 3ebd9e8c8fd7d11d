// Writes web/vendor/: the runtime of protobufjs and long.js, and the browser
// build of tus-js-client, as ES modules, so that a browser can load
// starling-client.js and starling-files.js without a bundler (the page maps
// "protobufjs/minimal.js" and "tus-js-client" to vendor/ with an import map). Run `npm run vendor` after updating protobufjs.
//
// `--check` writes nothing: it fails when web/vendor/ or web/starling_pb.js
// (regenerated with the `gen` script into a temporary file) differs from what
// is committed. tests/js_client.rs runs it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const web = fileURLToPath(new URL("..", import.meta.url));
const read = (path) => readFileSync(join(web, path), "utf8");
const version = (pkg) => JSON.parse(read(`node_modules/${pkg}/package.json`)).version;
const check = process.argv.includes("--check");

const wanted = {
  "vendor/long.js":
    `// long ${version("long")} (Apache-2.0), node_modules/long/index.js unchanged. Written by tools/vendor.mjs.\n` +
    read("node_modules/long/index.js"),
  "vendor/protobufjs-minimal.js": [
    `// protobufjs ${version("protobufjs")} (BSD-3-Clause), dist/minimal/protobuf.min.js as an ES module.`,
    "// Written by tools/vendor.mjs (npm run vendor); do not edit. The bundle sets",
    "// globalThis.protobuf; long.js makes 64-bit fields (message_id) exact.",
    'import Long from "./long.js";',
    read("node_modules/protobufjs/dist/minimal/protobuf.min.js").replace(/\n\/\/# sourceMappingURL=.*\s*$/, ""),
    "const protobuf = globalThis.protobuf;",
    "protobuf.util.Long = Long;",
    "protobuf.configure();",
    "export default protobuf;",
    "",
  ].join("\n"),
  "vendor/tus.js": [
    `// tus-js-client ${version("tus-js-client")} (MIT), dist/tus.min.js as an ES module.`,
    "// Written by tools/vendor.mjs (npm run vendor); do not edit. The bundle sets",
    "// globalThis.tus; starling-files.js imports { Upload } from it.",
    read("node_modules/tus-js-client/dist/tus.min.js").replace(/\n\/\/# sourceMappingURL=.*\s*$/, ""),
    "const tus = globalThis.tus;",
    "export const Upload = tus.Upload;",
    "export default tus;",
    "",
  ].join("\n"),
};

if (check) {
  const dir = mkdtempSync(join(tmpdir(), "starling-gen-"));
  try {
    // The `gen` script of package.json, writing to the temporary directory.
    const gen = JSON.parse(read("package.json")).scripts.gen.split(/\s+/);
    const out = gen.indexOf("-o") + 1;
    gen[out] = join(dir, gen[out]);
    execFileSync(join(web, "node_modules/.bin", gen[0]), gen.slice(1), { cwd: web, stdio: "inherit" });
    wanted["starling_pb.js"] = readFileSync(gen[out], "utf8");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const stale = [];
for (const [path, text] of Object.entries(wanted)) {
  if (!check) writeFileSync(join(web, path), text);
  else if (read(path) !== text) stale.push(path);
}
if (stale.length) {
  console.error(`out of date: ${stale.join(", ")}; run \`npm run gen\` and \`npm run vendor\` in web/`);
  process.exit(1);
}
