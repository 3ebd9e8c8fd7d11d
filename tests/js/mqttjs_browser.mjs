// MQTT.js (its browser bundle) inside headless Chromium, against starling's
// /mqtt endpoint: MQTT 3.1.1 and 5, subscribe, publish, receive.
// Usage: node mqttjs_browser.mjs ws://127.0.0.1:PORT/mqtt
// Prints one line "OK <version> <payload>" per protocol version; exit 1 on failure.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const [url] = process.argv.slice(2);
const bundle = join(dirname(fileURLToPath(import.meta.url)), "node_modules/mqtt/dist/mqtt.min.js");
const profile = mkdtempSync(join(tmpdir(), "starling-mqttjs-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.addScriptTag({ path: bundle }); // defines window.mqtt
  for (const version of [4, 5]) {
    const payload = await page.evaluate(
      ({ url, version }) =>
        new Promise((resolve, reject) => {
          setTimeout(() => reject(new Error("timed out")), 8000);
          const client = window.mqtt.connect(url, { protocolVersion: version, clientId: `browser-${version}`, reconnectPeriod: 0 });
          client.on("error", (e) => reject(new Error(e.message)));
          client.on("message", (_topic, message) => {
            client.end();
            resolve(new TextDecoder().decode(message));
          });
          client.on("connect", () => {
            client.subscribe(`browser/${version}`, { qos: 1 }, (err) => {
              if (err) return reject(err);
              client.publish(`browser/${version}`, `hello from a browser, v${version}`, { qos: 1 });
            });
          });
        }),
      { url, version },
    );
    console.log(`OK ${version} ${payload}`);
  }
} catch (e) {
  console.error(`mqttjs_browser: ${e.message}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
