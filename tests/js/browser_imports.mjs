// `node --import ./browser_imports.mjs SCRIPT`: modules under web/ resolve
// bare imports the way a browser does, through web/importmap.json (so
// "protobufjs/minimal.js" is web/vendor/protobufjs-minimal.js, not
// web/node_modules); a bare import missing from the map fails, as it would in
// a browser. Used by tests/js_client.rs.
import { readFileSync } from "node:fs";
import { register } from "node:module";

const web = new URL("../../web/", import.meta.url);
const importmap = JSON.parse(readFileSync(new URL("importmap.json", web), "utf8"));
register("./browser_imports_hooks.mjs", import.meta.url, { data: { imports: importmap.imports, web: web.href } });
