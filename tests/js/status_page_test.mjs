// The admin status page (web/status/) in headless Chromium:
// `node status_page_test.mjs URL SHOT_DIR EXPECTED_CONNECTIONS TOPIC`,
// URL being the admin listener's root.
//
// Prints one line per step. Every wait is a playwright wait with a timeout on
// what the page shows (`window.statusState`, the DOM), never a sleep. Exits 1
// with the error on stderr when a step fails. Needs Debian's chromium
// (/usr/bin/chromium) and playwright-core, like browser_demo_test.mjs.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, shots, expectedArg, topic] = process.argv.slice(2);
const expected = Number(expectedArg);
if (!url || !shots || !Number.isInteger(expected) || !topic) {
  console.error("usage: node status_page_test.mjs URL SHOT_DIR EXPECTED_CONNECTIONS TOPIC");
  process.exit(1);
}
const TIMEOUT = 10_000;
// The rates need three polls a second apart, the canary its first round.
const SLOW_TIMEOUT = 30_000;
const say = (line) => console.log(line);

/** Waits until `fn(arg)` is truthy in the page; fails naming `what`. */
async function until(page, what, fn, arg, timeout = TIMEOUT) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue();
  } catch (e) {
    throw new Error(`${page.name}: timed out waiting for ${what}: ${e.message.split("\n")[0]}`);
  }
}

const profile = mkdtempSync(join(tmpdir(), "starling-chromium-"));
let context;
let status = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = await context.newPage();
  page.name = "status";
  page.on("pageerror", (e) => console.error(`status: page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && console.error(`status: console: ${m.text()}`));

  await page.goto(url);
  await until(page, "the first successful poll", () => window.statusState?.ready);
  say("READY");

  const { connections } = await until(
    page,
    `at least ${expected} connections`,
    (expected) => {
      const n = Number(document.getElementById("connections-total").textContent);
      return n >= expected && { connections: n };
    },
    expected,
  );
  say(`CONNECTIONS ${connections}`);

  await until(
    page,
    `${topic} among the top topics`,
    (topic) => document.getElementById("top-topics").textContent.includes(topic),
    topic,
  );
  say(`TOPIC ${topic}`);

  const rate = await until(
    page,
    "a received rate above zero",
    () => {
      const received = window.statusState.rates.received;
      return received.length >= 2 && received.some((r) => r > 0) && Math.max(...received);
    },
    undefined,
    SLOW_TIMEOUT,
  );
  say(`RATE ${Math.round(rate)}`);

  const canary = await until(
    page,
    "the mqtt listener's canary result",
    () => {
      // innerText separates the table cells, textContent would run them together.
      const text = document.getElementById("canary").innerText.replace(/\s+/g, " ").trim();
      return text.includes("mqtt") && text;
    },
    undefined,
    SLOW_TIMEOUT,
  );
  say(`CANARY ${canary}`);

  await page.screenshot({ path: join(shots, "status.png"), fullPage: true });
  say("DONE");
} catch (e) {
  console.error(e?.stack ?? String(e));
  status = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
